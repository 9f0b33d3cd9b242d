from brain_mri.models.classifier import BrainMRIClassifier
from brain_mri.models.ensemble import EnsembleClassifier

__all__ = ["BrainMRIClassifier", "EnsembleClassifier"]
