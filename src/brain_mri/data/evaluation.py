"""The data a checkpoint is evaluated on, prepared as in the training run it comes from."""

from __future__ import annotations

from pathlib import Path

from brain_mri.data.batches import BrainMRIDataModule
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import SPLIT_FILE, run_folder_of


def evaluation_data(
    ckpt_path: str,
    trained: dict | None,
    class_names: list[str],
    image_size: int | None,
    crop: str = "none",
    on: str = "test",
    root: str | None = None,
    split_file: str | None = None,
    class_map: dict[str, str] | None = None,
    on_bad_image: str | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    cache_dir: str | None = None,
) -> BrainMRIDataModule:
    """The data a checkpoint is tested on, prepared as in training: at the model's input size, labelled by
    its ``class_names``, with the training run's data root and handling of unreadable files by default.

    ``on="test"``: the test partition of the run's ``split.csv`` (or of ``split_file``);
    ``on="all"``: every image under ``root``, which must be given.

    Nothing the checkpoint holds chooses a folder that is written to or trusted unchecked: the decode
    cache is this run's ``cache_dir``, and the training data root it remembers is read only through the
    run's split, whose content hashes every image must match.
    """
    if not isinstance(trained, dict) or not trained:
        raise BrainMRIError(f"{ckpt_path} holds no data settings: was it written by train.py?")
    if on == "all" and not root:  # eval.py says so at start (config.settings.check_eval_settings)
        raise BrainMRIError("evaluation_data(on='all') needs the folder to test: root=<folder>.")
    if not isinstance(trained.get("root"), str):
        raise BrainMRIError(f"{ckpt_path} holds a damaged data root: {trained.get('root')!r}.")
    settings = {
        "root": root or trained["root"],
        # a manifest-listed set is read through its manifest (labels, groups); another root is a folder
        "manifest": None if root else trained.get("manifest"),
        "image_size": image_size or trained["image_size"],
        "crop": crop,
        "duplicate_threshold": trained["duplicate_threshold"],
        "on_bad_image": on_bad_image or trained.get("on_bad_image", "error"),
        "min_image_size": trained.get("min_image_size", 1),
        "class_names": class_names,
        "class_map": class_map,
        "batch_size": batch_size or trained["batch_size"],
        "cache_dir": cache_dir,
        "num_workers": num_workers,
    }
    if on == "all":
        return checked_data(ckpt_path, settings, val_fraction=0.0, test_fraction=1.0)
    saved_split = Path(split_file) if split_file else run_folder_of(ckpt_path) / SPLIT_FILE
    if not saved_split.is_file():
        raise BrainMRIError(
            f"No split file at {saved_split}: pass data.split_file=<run>/split.csv, or evaluate every "
            "image of a folder the model was not trained on with eval.on=all data.root=<folder>."
        )
    return checked_data(ckpt_path, settings, split_file=str(saved_split))


def checked_data(ckpt_path: str, settings: dict, **more) -> BrainMRIDataModule:
    """The data module, whose constructor checks every setting's range; a value of the wrong type taken
    from the checkpoint is one message too."""
    try:
        return BrainMRIDataModule(**settings, **more)
    except (TypeError, ValueError) as err:
        raise BrainMRIError(f"{ckpt_path} holds data settings that are not valid: {err}") from None
