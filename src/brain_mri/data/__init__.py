from brain_mri.data.datamodule import BrainMRIDataModule

__all__ = ["BrainMRIDataModule"]
