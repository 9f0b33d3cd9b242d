"""Brain MRI tumor classification with PyTorch Lightning and Hydra."""

from brain_mri.data import BrainMRIDataModule
from brain_mri.models import BrainMRIClassifier

__all__ = ["BrainMRIClassifier", "BrainMRIDataModule"]
__version__ = "0.1.0"
