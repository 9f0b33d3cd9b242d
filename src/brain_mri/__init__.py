"""Brain MRI tumor classification with PyTorch Lightning and Hydra."""

import atexit
import gc

from brain_mri.third_party_noise import silence_third_party_noise

silence_third_party_noise()  # before anything below imports Lightning

from brain_mri.data import BrainMRIDataModule  # noqa: E402
from brain_mri.models import BrainMRIClassifier  # noqa: E402

__all__ = ["BrainMRIClassifier", "BrainMRIDataModule"]
__version__ = "0.1.0"

# At exit, the interpreter's last garbage collections walk every object that torch, torchvision and
# Lightning created: 1.4 s of every process that imports this package (a train.py run, each DDP or joblib
# worker, a report). Frozen objects are skipped and freed with the process; the atexit handlers
# registered before this one, such as logging's final flush, still run after it.
atexit.register(gc.freeze)
