"""Stage 1, the folder: the image files of a class-folder data set, their classes, and why a file cannot be
read (every problem with the folder itself is one message that names it)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from brain_mri.data.preprocessing import is_dicom, pydicom_module
from brain_mri.errors import BrainMRIError

SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


@dataclass(frozen=True)
class ImageFile:
    """One image of the data set: its path relative to the data root and its class."""

    path: str
    class_name: str
    label: int


def is_ignored(path: Path) -> bool:
    """Hidden and operating-system files (``.DS_Store``, ``Thumbs.db``) are never images."""
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILE_NAMES


def list_folder(folder: Path) -> list[Path]:
    """The entries of a folder, or one message that names it when it cannot be read."""
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise BrainMRIError(
            f"Cannot read the folder {folder} ({err.strerror or err}): check its permissions."
        ) from None


def is_broken_link(path: Path) -> bool:
    """A symbolic link whose target is missing or loops: listed as unreadable, never skipped in silence."""
    return path.is_symlink() and not path.exists()


def discover_classes(root: Path, at_least: int = 2) -> list[str]:
    """Class names are the sub-folder names in sorted order, so for the Kaggle set ``no`` = 0, ``yes`` = 1
    (one source of several may hold a single class: ``at_least=1``)."""
    if root.exists() and not root.is_dir():
        raise BrainMRIError(
            f"The data root {root} is a file; data.root must be a folder with one sub-folder per class "
            "(e.g. no/ and yes/)."
        )
    if not root.is_dir():
        raise BrainMRIError(f"The data folder {root} does not exist.")
    classes = sorted(p.name for p in list_folder(root) if p.is_dir() and not is_ignored(p))
    if len(classes) < at_least:
        hint = ""
        if len(classes) == 1 and len([p for p in list_folder(root / classes[0]) if p.is_dir()]) >= 2:
            hint = f" Did you mean data.root={root / classes[0]}?"
        raise BrainMRIError(
            f"The data folder {root} must hold one sub-folder per class (at least two), "
            f"found {classes or 'none'}.{hint}"
        )
    return classes


def folder_labels(
    folders: list[str], class_names: list[str] | None, class_map: dict[str, str] | None
) -> dict[str, tuple[str, int]]:
    """Class folder -> (class name, label). Without ``class_names`` (training) the folders are the classes,
    in sorted order. With them (a model's classes), folders are matched by name, never by position,
    after renaming through ``class_map`` ({folder: class}); a folder that matches no class stops."""
    if class_names is None:
        return {folder: (folder, label) for label, folder in enumerate(folders)}
    renamed = {folder: str((class_map or {}).get(folder, folder)) for folder in folders}
    unknown = [folder for folder in folders if renamed[folder] not in class_names]
    if unknown:
        named = [f"{f} (mapped to {renamed[f]})" if renamed[f] != f else f for f in unknown]
        template = ", ".join(f"{folder}: <class>" for folder in unknown)
        raise BrainMRIError(
            f"The class folders {folders} do not match the model's classes {class_names}: "
            f"{', '.join(named)} is none of them. Say which class each folder holds, "
            f"eval.class_map={{{template}}}, with <class> one of {', '.join(class_names)}."
        )
    return {folder: (renamed[folder], class_names.index(renamed[folder])) for folder in folders}


def scan_image_files(
    root: Path,
    class_names: list[str] | None = None,
    class_map: dict[str, str] | None = None,
    at_least: int = 2,
) -> list[ImageFile]:
    """Every non-hidden file in each class folder, in a deterministic order (folder, then path).

    Labels follow ``class_names`` when given (see :func:`folder_labels`), else the sorted folder names.
    """
    files = []
    labels = folder_labels(discover_classes(root, at_least), class_names, class_map)
    for folder, (class_name, label) in labels.items():
        class_dir = root / folder
        entries = [p for p in list_folder(class_dir) if not is_ignored(p)]
        nested = sorted(p.name for p in entries if p.is_dir())
        if nested:
            raise BrainMRIError(
                f"The class folder {class_dir} holds sub-folders ({', '.join(nested)}): "
                "images must lie directly in the class folders."
            )
        members = sorted(p for p in entries if p.is_file() or is_broken_link(p))
        if not members:
            raise BrainMRIError(f"The class folder {class_dir} holds no files.")
        files += [ImageFile(p.relative_to(root).as_posix(), class_name, label) for p in members]
    return files


def image_header(content: bytes) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone (PIL and pydicom read pixels only when asked)."""
    if is_dicom(content):
        dataset = pydicom_module().dcmread(io.BytesIO(content), stop_before_pixels=True)
        return int(dataset.Columns), int(dataset.Rows), int(getattr(dataset, "NumberOfFrames", 1) or 1)
    with Image.open(io.BytesIO(content)) as image:
        return image.width, image.height, getattr(image, "n_frames", 1)


def unreadable_reason(content: bytes, err: Exception) -> str:
    """Why a file cannot be read, in words: its type where it is known, never PIL's object address."""
    if is_dicom(content):
        return str(err) if isinstance(err, BrainMRIError) else f"a DICOM file that cannot be read ({err})"
    if isinstance(err, UnidentifiedImageError):
        return f"not an image format PIL can read ({len(content)} bytes)" if content else "an empty file"
    return str(err) or type(err).__name__


def scan_sources(
    root: Path, sources: list[str], class_names: list[str] | None, class_map: dict[str, str] | None
) -> tuple[list[ImageFile], dict[str, str]]:
    """The class folders of each source folder under ``root`` (``data.sources``), labelled alike (by
    ``class_names``, else every class any source has), and the source of each file."""
    missing = [s for s in sources if not (root / s).is_dir()]
    if missing:
        raise BrainMRIError(
            f"data.sources names folders that are not under {root}: {', '.join(missing)} (each source is a "
            "folder of class folders)."
        )
    names = class_names or sorted({c for s in sources for c in discover_classes(root / s, at_least=1)})
    files, source_of = [], {}
    for source in sources:
        for item in scan_image_files(root / source, names, class_map, at_least=1):
            path = f"{source}/{item.path}"
            files.append(ImageFile(path, item.class_name, item.label))
            source_of[path] = source
    return files, source_of


def class_names_of(files: list[ImageFile]) -> list[str]:
    """Class names in label order."""
    return [name for _, name in sorted({(item.label, item.class_name) for item in files})]
