"""Bad input of every kind gives one clear message before any work, never a bare traceback."""

import numpy as np
import pytest
from PIL import Image

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.images import read_grayscale, scan_image_files
from brain_mri.errors import BrainMRIError
from helpers import FAST_TRAINING, corrupt_copy, run_script

GRADIENT = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)  # dark left, bright right


def planted(kind: str, folder):
    """Write the gradient in one image mode/format; returns the path."""
    rgb = Image.fromarray(GRADIENT).convert("RGB")
    path = folder / f"{kind}.img"
    if kind == "1-bit":
        Image.fromarray(GRADIENT > 127).save(path, format="PNG")
    elif kind == "L":
        Image.fromarray(GRADIENT).save(path, format="PNG")
    elif kind == "LA":
        Image.fromarray(GRADIENT).convert("LA").save(path, format="PNG")
    elif kind == "I;16":
        Image.fromarray(GRADIENT.astype(np.uint16) * 257).save(path, format="PNG")
    elif kind in ("RGB", "BMP", "TIFF"):
        rgb.save(path, format={"RGB": "JPEG", "BMP": "BMP", "TIFF": "TIFF"}[kind])
    elif kind == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.where(GRADIENT > 127, 255, 0).astype(np.uint8)))
        rgba.save(path, format="PNG")
    elif kind == "P-transparent":
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        palette.info["transparency"] = int(np.asarray(palette)[0, 0])
        palette.save(path, format="PNG", transparency=palette.info["transparency"])
    elif kind == "CMYK":
        rgb.convert("CMYK").save(path, format="JPEG")
    elif kind == "EXIF-rotated":
        exif = Image.Exif()
        exif[0x0112] = 3  # stored upside down: viewers rotate by 180 degrees
        rgb.rotate(180).save(path, format="JPEG", exif=exif)
    return path


@pytest.mark.parametrize(
    "kind",
    ["1-bit", "L", "LA", "I;16", "RGB", "RGBA", "P-transparent", "CMYK", "EXIF-rotated", "BMP", "TIFF"],
)
def test_every_mode_and_format_reads_as_upright_grayscale(tmp_path, kind):
    gray = np.asarray(read_grayscale(planted(kind, tmp_path)))
    assert gray.dtype == np.uint8 and gray.shape == (48, 64)
    assert gray[:, :8].mean() < 40 and gray[:, -8:].mean() > 200, kind


def truncated_jpeg_source(tmp_path):
    folder = tmp_path / "jpegs"
    for name in ("no", "yes"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(
                np.random.default_rng(10 * len(name) + i).integers(0, 255, (64, 64), dtype=np.uint8)
            ).save(folder / name / f"{i}.jpg", quality=95)
    return folder


def test_every_bad_file_is_listed_in_one_message(tmp_path):
    root, bad = corrupt_copy(truncated_jpeg_source(tmp_path), tmp_path / "data")
    with pytest.raises(BrainMRIError) as error:
        BrainMRIDataModule(str(root), image_size=32, val_fraction=0.25, test_fraction=0.25).setup()
    message = str(error.value)
    assert "4 file(s)" in message and all(path in message for path in bad) and "on_bad_image=skip" in message


def test_skipping_bad_files_warns_and_records_them(tmp_path, caplog):
    root, bad = corrupt_copy(truncated_jpeg_source(tmp_path), tmp_path / "data")
    datamodule = BrainMRIDataModule(
        str(root),
        image_size=32,
        val_fraction=0.25,
        test_fraction=0.25,
        on_bad_image="skip",
    )
    datamodule.setup()
    assert len(datamodule.files) == 8
    assert sorted(path for path, _ in datamodule.bad_files) == bad
    assert "Skipping 4 unreadable" in caplog.text


def test_bad_files_in_a_copy_of_the_real_set(real_root, tmp_path):
    root, bad = corrupt_copy(real_root, tmp_path / "data")
    datamodule = BrainMRIDataModule(str(root), image_size=32, on_bad_image="skip")
    datamodule.setup()
    assert len(datamodule.files) == 253
    assert sorted(path for path, _ in datamodule.bad_files) == bad


def test_train_script_lists_bad_files_without_a_traceback(phantom_root, tmp_path):
    root, bad = corrupt_copy(phantom_root, tmp_path / "data")
    result = run_script("train.py", *FAST_TRAINING, f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and all(path in result.stderr for path in bad)
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before the first epoch


def class_folders(root, layout: dict):
    for name, count in layout.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(GRADIENT).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "at least two"),
        ({"tumor": 3}, "at least two"),
        ({"no": 3, "yes": 0}, "holds no files"),
        ({"no": 3, "yes": 3, "yes/more": 1}, "holds sub-folders"),
    ],
)
def test_wrong_layouts_are_explained(tmp_path, layout, message):
    tmp_path.joinpath("data").mkdir()
    root = class_folders(tmp_path / "data", layout)
    with pytest.raises(BrainMRIError, match=message):
        scan_image_files(root)


def test_a_root_one_level_too_high_gets_a_hint(tmp_path):
    class_folders(tmp_path / "download" / "brain_tumor_dataset", {"no": 1, "yes": 1})
    with pytest.raises(BrainMRIError, match=r"Did you mean data\.root=.*brain_tumor_dataset"):
        scan_image_files(tmp_path / "download")


@pytest.mark.parametrize(
    ("override", "message"),
    [("data.test_fraction=0.0", "test partition"), ("model.arch=resnet1000", "densenet121, resnet18, vgg11")],
)
def test_impossible_settings_stop_at_start(phantom_root, tmp_path, override, message):
    """End to end for one data and one model setting; the other checks are unit tests of the same code."""
    result = run_script(
        "train.py", *FAST_TRAINING, f"data.root={phantom_root}", override, f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "where", ["hydra.run.dir={}/run", "paths.log_dir={}/out"]
)  # explicit, and the default path
def test_an_output_folder_that_cannot_be_written(phantom_root, tmp_path, where):
    (tmp_path / "a-file").write_text("")
    result = run_script(
        "train.py", *FAST_TRAINING, f"data.root={phantom_root}", where.format(tmp_path / "a-file")
    )
    assert result.returncode == 1 and "cannot write the output folder" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
