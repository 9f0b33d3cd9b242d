from brain_mri.models.classifier import BrainMRIClassifier

__all__ = ["BrainMRIClassifier"]
