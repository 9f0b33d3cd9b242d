"""Bad input of every kind gives one clear message before any work, never a bare traceback."""

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import open_dict
from PIL import Image

from brain_mri.atomic import atomic_path, interrupt_between_writes, written_whole
from brain_mri.config.launch import OutputFolderCheck, run_task
from brain_mri.config.settings import slurm_job_problems
from brain_mri.data import BrainMRIDataModule
from brain_mri.data.folder import scan_image_files
from brain_mri.data.preprocessing import read_grayscale
from brain_mri.data.split import read_split, write_split
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import read_json, write_csv, write_json
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, PROJECT_ROOT, compose_task, corrupt_copy

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


def test_training_lists_every_bad_file_before_its_first_epoch(phantom_root, tmp_path):
    root, bad = corrupt_copy(phantom_root, tmp_path / "data")
    with pytest.raises(BrainMRIError) as stopped:  # which train.py prints without a traceback, exit 1
        train(compose_task("train", tmp_path / "run", *FAST_TRAINING, f"data.root={root}"))
    assert all(path in str(stopped.value) for path in bad)
    assert not (tmp_path / "run" / "checkpoints").exists()


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


def test_a_split_that_leaves_a_partition_empty_stops_before_training(phantom_root, tmp_path):
    with pytest.raises(BrainMRIError, match="test partition"):
        train(
            compose_task(
                "train", tmp_path, *FAST_TRAINING, f"data.root={phantom_root}", "data.test_fraction=0.0"
            )
        )
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "where", ["hydra.run.dir={}/run", "paths.log_dir={}/out"]
)  # explicit, and the default
def test_an_output_folder_that_cannot_be_written(phantom_root, tmp_path, where):
    (tmp_path / "a-file").write_text("")
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        overrides = [*FAST_TRAINING, f"data.root={phantom_root}", where.format(tmp_path / "a-file")]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(PROJECT_ROOT)
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(io.StringIO()) as stderr:
        OutputFolderCheck().on_run_start(cfg)
    assert stopped.value.code == 1 and "cannot write the output folder" in stderr.getvalue()


def without_file_capabilities(*command: str) -> subprocess.CompletedProcess:
    """Run as root but without the capabilities that let root read any file (tests run as root here)."""
    return subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_class_folder_that_cannot_be_read_is_named(phantom_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    (data / "yes").chmod(0)
    result = without_file_capabilities(
        sys.executable, "train.py", *FAST_TRAINING, f"data.root={data}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    (data / "yes").chmod(0o755)
    assert result.returncode == 1 and f"Cannot read the folder {data / 'yes'}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_a_read_only_cache_folder_is_left_out_with_a_warning(phantom_root, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    run = tmp_path / "run"
    overrides = [
        *FAST_TRAINING,
        "trainer.max_epochs=1",
        f"data.root={phantom_root}",
        f"data.cache_dir={cache}",
    ]
    result = without_file_capabilities(sys.executable, "train.py", *overrides, f"hydra.run.dir={run}")
    cache.chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "train.log").read_text().count("Cannot write the decode cache") == 1
    assert read_json(run / "metrics.json")["status"] == "completed" and not list(cache.iterdir())


def test_a_file_name_that_is_not_utf8_is_kept_exactly(phantom_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    latin1 = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    shutil.copyfile(data / "no" / "no_002.png", data / "no" / latin1)
    datamodule = BrainMRIDataModule(str(data), image_size=32)
    datamodule.setup()
    write_split(tmp_path / "split.csv", datamodule.split_table)
    rows = read_split(tmp_path / "split.csv")
    assert len(rows) == 45 and f"no/{latin1}" in {r["path"] for r in rows}
    reused = BrainMRIDataModule(str(data), image_size=32, split_file=str(tmp_path / "split.csv"))
    reused.setup()
    assert [f.path for f in reused.files] == [r["path"] for r in rows]
    write_json(tmp_path / "m.json", {"path": f"no/{latin1}"})
    assert read_json(tmp_path / "m.json")["path"] == f"no/{latin1}"
    run = tmp_path / "run"  # and a whole training run: split.csv, run_info.json, predictions.csv
    train(compose_task("train", run, *FAST_TRAINING, f"data.root={data}", "trainer.max_epochs=1"))
    assert f"no/{latin1}" in {r["path"] for r in read_split(run / "split.csv")}
    assert read_json(run / "metrics.json")["status"] == "completed"


def test_a_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "predictions.csv"
    write_csv(target, [{"path": "a", "label": 1}], ("path", "label"))
    before = target.read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_csv(target, [{"path": "b", "label": 0}] * 1000, ("path", "label"))
    assert target.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


def test_sigterm_during_a_write_stops_the_task_once_the_file_is_whole(tmp_path):
    """A scheduler's SIGTERM that arrives while a checkpoint is written (Slurm sends it right after a
    requeue) interrupts the task after the write: raised inside it, it broke the writer's transaction."""
    target = tmp_path / "last.ckpt"
    with pytest.raises(SIGTERMException), written_whole(), atomic_path(target) as temporary:
        temporary.write_text("half")
        interrupt_between_writes(SIGTERMException())  # what the task's SIGTERM handler does
        temporary.write_text("whole")
    assert target.read_text() == "whole" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    with pytest.raises(SIGTERMException):  # between writes: at once
        interrupt_between_writes(SIGTERMException())


def test_broken_and_looping_links_are_listed_valid_links_followed(phantom_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "no").symlink_to(phantom_root / "no", target_is_directory=True)  # a link to a folder
    shutil.copytree(phantom_root / "yes", data / "yes")
    (data / "yes" / "linked.png").symlink_to(phantom_root / "yes" / "yes_003.png")  # a link to a file
    (data / "yes" / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (data / "yes" / "loop.jpg").symlink_to(data / "yes" / "loop.jpg")
    with pytest.raises(BrainMRIError) as error:
        BrainMRIDataModule(str(data), image_size=32).setup()
    assert "2 file(s)" in str(error.value)
    assert "yes/broken.jpg" in str(error.value) and "yes/loop.jpg" in str(error.value)
    datamodule = BrainMRIDataModule(str(data), image_size=32, on_bad_image="skip")
    datamodule.setup()
    assert len(datamodule.files) == 45 and "yes/linked.png" in {f.path for f in datamodule.files}


def test_a_data_root_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(BrainMRIError, match=r"is a file; data\.root must be a folder"):
        scan_image_files(tmp_path / "data.zip")


def test_a_quoted_path_with_a_space_and_accents_reaches_the_config(tmp_path):
    cfg = compose_task("train", tmp_path, "data.root='/data/my scans/données'")
    assert cfg.data.root == "/data/my scans/données"


def check_at_start(run_dir, *overrides: str) -> str:
    """What a single run says of these overrides before it does any work: Hydra's callback (the output
    folder), then the task's own checks, through the task runner as train.py runs them."""
    placed = [] if any(o.startswith("resume=") for o in overrides) else [f"hydra.run.dir={run_dir}"]
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *placed], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(PROJECT_ROOT)
        cfg.hydra.runtime.output_dir = cfg.hydra.run.dir
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(io.StringIO()) as stderr:
        OutputFolderCheck().on_run_start(cfg)
        task_cfg = cfg.copy()
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        run_task(train, task_cfg)
    assert stopped.value.code == 1
    if not any(o.startswith("resume=") for o in overrides):
        shutil.rmtree(run_dir, ignore_errors=True)  # made by the callback; train.py removes it (tested apart)
    return stderr.getvalue()


def test_settings_are_checked_before_any_work(phantom_root, tmp_path):
    """A wrong value stops before the run folder exists and before anything is decoded. (train.py runs
    this callback in its own process in the missing data test.)"""
    cache = tmp_path / "cache"
    overrides = [*FAST_TRAINING, f"data.root={phantom_root}", f"data.cache_dir={cache}", "model.lr=-1"]
    assert "model.lr must be greater than 0" in check_at_start(tmp_path / "run", *overrides)
    assert not cache.exists()


@pytest.mark.parametrize("key", ["data.batch_size", "model.lr", "trainer.max_epochs"])
def test_a_setting_of_the_wrong_type_is_refused_with_its_key(tmp_path, key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_task("train", tmp_path, f"{key}=abc")
    assert key in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs must be a whole number of at least 1"),
        ("data.image_size=10000", "GiB for one training batch of 16 images of resnet18"),
        ("data.image_size=10", "data.image_size must be at least 32 pixels"),
        ("data.split_seed=-1", "data.split_seed must be a whole number of 0 or more"),
        ("seed=abc", "seed must be a whole number of 0 or more"),
        ("gallery_images=-1", "gallery_images must be a whole number of 0 or more"),
        ("data.num_workers=-1", "data.num_workers must be 0 or more"),
        ("callbacks.early_stopping.patience=1.5", "callbacks.early_stopping.patience must be a whole number"),
        (
            "callbacks.early_stopping.patience=''",
            "callbacks.early_stopping.patience must be a whole number of 0 or more, got ''.",
        ),
        ("data.on_bad_image=ignore", "data.on_bad_image must be 'error' or 'skip'"),
        ("data.duplicate_threshold=2", "data.duplicate_threshold must lie in (0, 1]"),
        ("model.arch=resnet1000", "convnext_tiny, densenet121, efficientnet_b0, resnet18, resnet50, vgg11"),
        ("model.weights_path=", "model.weights_path is empty"),
        ("model.weights_path=/no/such/resnet18.pt", "model.weights_path: no file at /no/such/resnet18.pt"),
        ("model.freeze_backbone_epochs=2", "the backbone would never train"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be greater than 0"),
        ("model.scheduler=onecycle", "The one-cycle schedule needs 0 < model.warmup_fraction < 1"),
        ("model.label_smoothing=1", "model.label_smoothing must lie in [0, 1)"),
        ("model.lr=inf", "model.lr must be a finite number, got inf."),
        ("model.weight_decay=nan", "model.weight_decay must be a finite number, got nan."),
        ("model.cam_layer=fc", "model.cam_layer=fc: its output is not a feature map (N, C, H, W) but (1, 2)"),
        ("model.cam_layer=layer9", "model.cam_layer=layer9: resnet18 has no such module"),
    ],
)
def test_each_setting_is_one_message_before_the_run_folder(phantom_root, tmp_path, override, message):
    said = check_at_start(tmp_path / "run", *FAST_TRAINING, f"data.root={phantom_root}", override)
    assert said.startswith("Error: ") and message in said and "Traceback" not in said
    assert said.strip().count("\n") == 0  # that problem alone


def test_layout_and_resume_problems_stop_before_the_run_folder(phantom_root, trained_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    said = check_at_start(tmp_path / "run", *FAST_TRAINING, f"data.root={tmp_path / 'a-file'}")
    assert "is a file; data.root must be a folder" in said
    said = check_at_start(tmp_path / "nowhere", *FAST_TRAINING, f"resume={tmp_path / 'nowhere'}")
    assert f"No run folder at {tmp_path / 'nowhere'} to resume." in said
    (tmp_path / "a-run.txt").write_text("")
    said = check_at_start(tmp_path / "x", *FAST_TRAINING, f"resume={tmp_path / 'a-run.txt'}")  # a file
    assert f"No run folder at {tmp_path / 'a-run.txt'} to resume." in said
    said = check_at_start(tmp_path / "unused", *FAST_TRAINING, f"resume={tmp_path}")  # exists, holds no run
    assert f"{tmp_path} is not a run folder of this project (no config.yaml)." in said
    moved = ("resume=" + str(tmp_path / "nowhere"), f"hydra.run.dir={tmp_path / 'elsewhere'}")
    assert "continues a run in its own folder" in check_at_start(tmp_path / "elsewhere", *moved)
    finished = f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"  # 2 epochs, and max_epochs=2
    assert "nothing is left" in check_at_start(tmp_path / "more", *FAST_TRAINING, finished)
    for folder in (trained_run, trained_run / "checkpoints"):
        said = check_at_start(tmp_path / "from", *FAST_TRAINING, f"ckpt_path={folder}")
        assert f"To continue that run in its folder: resume={trained_run};" in said
        assert f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}" in said
    said = check_at_start(tmp_path / "from", *FAST_TRAINING, f"ckpt_path={tmp_path}")
    assert "is a folder; training continues from a checkpoint file." in said and "resume=" not in said
    other = ["trainer.max_epochs=3", "model.optimizer=sgd", "model.lr=0.1"]  # restored from it, whatever
    said = check_at_start(tmp_path / "more", *FAST_TRAINING, finished, *other)
    assert (
        "optimizer and schedule included, so these cannot differ from it: model.optimizer=sgd (the " in said
    )
    assert "checkpoint's: adam); model.lr=0.1 (the checkpoint's: 0.001)" in said


def test_odd_images_are_named_for_what_they_are(tmp_path, caplog):
    data = class_folders(tmp_path / "data", {"no": 3, "yes": 3})
    (data / "no" / "slice.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    Image.fromarray(GRADIENT[:1, :]).save(data / "no" / "line.png")  # 64 x 1 pixels
    frames = [Image.fromarray(GRADIENT), Image.fromarray(255 - GRADIENT)]
    frames[0].save(data / "yes" / "animated.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(BrainMRIError) as error:
        BrainMRIDataModule(str(data), image_size=32, val_fraction=0.3, test_fraction=0.3).setup()
    assert "no/slice.dcm: a DICOM file that cannot be read" in str(error.value)
    assert "BytesIO" not in str(error.value)
    assert "no/line.png: too small: 64x1 pixels (data.min_image_size=32)" in str(error.value)
    assert "yes/animated.gif: 2 frames; only the first is used" in caplog.text


def test_the_memory_estimate_counts_the_batch_that_can_form(monkeypatch):
    from omegaconf import OmegaConf

    from brain_mri.config import settings

    monkeypatch.setattr(settings, "available_memory", lambda accelerator: 1)  # nothing fits: it is said
    data = OmegaConf.create({"image_size": 100, "batch_size": 100000})
    (said,) = settings.memory_problems("resnet18", data, "cpu", files=253)
    assert "one training batch of 253 images of resnet18" in said and "data.batch_size=100000" in said
    assert float(said.split("GiB for one training batch")[0].split()[-1]) < 8  # 253 images, not 100,000


def claim(*overrides, run_dir=None, task="train"):
    """The run folder Hydra's callback claims for a ``task`` (train.py) run of ``overrides``."""
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(task, overrides=list(overrides), return_hydra_config=True)
    if run_dir:
        with open_dict(cfg):
            cfg.hydra.run.dir = str(run_dir)
    OutputFolderCheck().on_run_start(cfg)
    return Path(cfg.hydra.run.dir)


def test_two_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    """The default folder is named by the second a run starts: the second run's is taken by the first,
    so it gets <folder>_2. Each folder is claimed by an exclusively created file before Hydra writes."""
    same_second = tmp_path / "runs" / "2026-12-06_17-20-00"
    first, second = claim(run_dir=same_second), claim(run_dir=same_second)
    assert first == same_second and second == same_second.with_name(f"{same_second.name}_2")
    owner = f"{os.getpid()}@{socket.gethostname()}\n"
    assert (first / ".claimed").read_text() == (second / ".claimed").read_text() == owner


def test_a_folder_named_for_a_run_that_holds_another_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: {}\n")  # a run from before folders were claimed
    for taken in (tmp_path / "run", claim(run_dir=tmp_path / "new")):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as stderr:
            claim(f"hydra.run.dir={taken}")
        said = stderr.getvalue()
        assert f"{taken} holds another run: choose a new folder (hydra.run.dir=...), or continue" in said
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as stderr:
        claim(f"hydra.run.dir={taken}", "ckpt_path=x.ckpt", task="eval")  # only training resumes
    assert f"{taken} holds another run: choose a new folder (hydra.run.dir=...).\n" in stderr.getvalue()


def test_more_nodes_or_devices_than_the_slurm_job_holds_are_one_message_each(
    phantom_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "brain-mri")
    said = check_at_start(
        tmp_path / "run",
        *FAST_TRAINING,
        f"data.root={phantom_root}",
        "trainer.num_nodes=2",
        "trainer.devices=3",
    )
    assert "trainer.num_nodes=2 but this Slurm job holds 1 node: ask for them (sbatch --nodes=2)" in said
    assert "trainer.devices=3 but Slurm starts 2 tasks per node (--ntasks-per-node)" in said
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning starts its own processes there
    assert slurm_job_problems(num_nodes=1, devices=3) == []
