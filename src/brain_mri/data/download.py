"""Fetch the Kaggle brain MRI set for users who do not have it; fail with one clear message offline."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from brain_mri.errors import BrainMRIError

KAGGLE_DATASET = "navoneel/brain-mri-images-for-brain-tumor-detection"
KAGGLE_HOST = "www.kaggle.com"


def is_online(host: str = KAGGLE_HOST, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def missing_data_message(root: Path, download_offered: bool = True) -> str:
    """Where the data should be and the ways to get it (the download only where it is still an option)."""
    download = "  or download it (needs internet) with data.download=true.\n" if download_offered else ""
    return (
        f"No data set at {root}.\n"
        "  Put the Kaggle 'Brain MRI Images for Brain Tumor Detection' set there\n"
        "  (class folders no/ and yes/),\n"
        "  or point to it with data.root=/path/to/brain_tumor_dataset or BRAIN_MRI_DATA=/path/to/it,\n"
        f"{download}"
        "  To try the project without any data: python train.py data=synthetic"
    )


def find_class_root(folder: Path) -> Path:
    """The Kaggle archive nests the class folders; find the folder that holds ``no/`` and ``yes/``."""
    candidates = [p for p in [folder, *folder.rglob("*")] if (p / "no").is_dir() and (p / "yes").is_dir()]
    if not candidates:
        raise BrainMRIError(f"The download in {folder} has no no/ and yes/ class folders.")
    return min(candidates, key=lambda p: len(p.parts))


def download_kaggle_dataset(root: Path) -> Path:
    """Download with kagglehub (it shows a progress bar) and copy the class folders to ``root``."""
    import kagglehub

    try:
        cached = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as err:  # kagglehub raises many kinds; all mean the same to the user
        raise BrainMRIError(
            f"Downloading {KAGGLE_DATASET} failed: {err}\n{missing_data_message(root)}"
        ) from err
    source = find_class_root(cached)
    root.parent.mkdir(parents=True, exist_ok=True)
    for class_name in ("no", "yes"):
        shutil.copytree(source / class_name, root / class_name, dirs_exist_ok=True)
    return root


def ensure_dataset(root: Path, download: bool) -> Path:
    """Return ``root`` if it exists; otherwise download when asked (or when the user says yes at a prompt)."""
    if root.exists():
        return root
    if not is_online():
        offline = "Kaggle cannot be reached from this machine, so it cannot be downloaded."
        if download:
            raise BrainMRIError(f"data.download=true: {offline}\n{missing_data_message(root, False)}")
        raise BrainMRIError(missing_data_message(root) + f"\n  ({offline})")
    if not download and sys.stdin.isatty():
        answer = input(f"No data at {root}. Download {KAGGLE_DATASET} from Kaggle now? [y/N] ")
        download = answer.strip().lower() in ("y", "yes")
    if not download:
        raise BrainMRIError(missing_data_message(root))
    return download_kaggle_dataset(root)
