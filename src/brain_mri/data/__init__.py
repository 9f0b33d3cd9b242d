"""The data layer, in the order an image flows through it: folder -> index -> split -> batches."""

from brain_mri.data.batches import BrainMRIDataModule

__all__ = ["BrainMRIDataModule"]
