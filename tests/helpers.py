"""What the tests share besides fixtures: paths, the fast training settings, and task runners."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from brain_mri.config.launch import register

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("BRAIN_MRI_DATA", PROJECT_ROOT.parent / "shared/data/brain_tumor_dataset"))
FIGSHARE_DATA = Path(
    os.environ.get("BRAIN_MRI_FIGSHARE", PROJECT_ROOT.parent / "shared/data/figshare_brain_tumor")
)

# The config groups under conf/, each a folder of options (the schemas and model/_defaults are internal)
CONFIG_GROUPS = (
    "data",
    "model",
    "optimizer",
    "scheduler",
    "augmentation",
    "trainer",
    "callbacks",
    "logger",
    "paths",
    "experiment",
    "hparams_search",
    "debug",
)

# Small and fast: 2 epochs at most, 32-pixel images, single process; fp32 on every CPU (the default
# precision is bf16 where the CPU has it, so the numbers would depend on the machine).
FAST_TRAINING = [
    "data=synthetic",
    "data.image_size=32",
    "data.batch_size=16",
    "trainer=cpu",
    "trainer.precision=32-true",
    "trainer.max_epochs=2",
    "callbacks.model_summary=null",
    "gallery_images=0",  # the runs whose gallery a test reads ask for it
]


class PoisonAt(L.Callback):
    """Makes the model's output NaN from the validation of ``epoch`` on (a test callback, for
    ``+callbacks.poison._target_=helpers.PoisonAt``): a divergence where the test needs it."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            with torch.no_grad():
                pl_module.net.fc.bias.fill_(float("nan"))


class TermAt(L.Callback):
    """Sends this process SIGTERM when training epoch ``epoch`` starts, as a cluster's scheduler does when
    a job's time is up (a test callback, for ``+callbacks.term._target_=helpers.TermAt``); once per
    process, so that the resumed run, whose config names it too, runs to its end."""

    sent = False

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not TermAt.sent:
            TermAt.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class SlurmSignalAt(L.Callback):
    """Has Slurm stop this job as a cluster does, when training epoch ``epoch`` starts in the job's
    ``start``-th start (0: the first): ``how="USR1"`` or ``"USR2"`` sends that signal (``scancel
    --signal``: the warning before a time limit, to Lightning or to submitit); ``how="requeue"`` requeues
    the job (``scontrol requeue``: SIGTERM, then a new start). It then waits for Slurm to stop it (a test
    callback for runs on the local Slurm cluster)."""

    def __init__(self, epoch: int, start: int = 0, how: str = "USR1"):
        self.epoch, self.start, self.how = epoch, start, how

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        this_start = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if trainer.current_epoch == self.epoch and this_start == self.start and trainer.is_global_zero:
            job = os.environ["SLURM_JOB_ID"]
            command = ["scancel", f"--signal={self.how}", job]
            if self.how == "requeue":
                command = ["scontrol", "requeue", job]
            subprocess.run(command, check=True)
            time.sleep(120)


def compose_task(config_name: str, output_dir: Path, *overrides: str) -> DictConfig:
    """The config ``train.py`` / ``eval.py`` would pass their task, for calling the task in-process."""
    register()
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(PROJECT_ROOT)
        cfg.hydra.job.name = config_name
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills once per test session, shared by every xdist worker (each worker's
    session fixtures are its own; the workers' temporary folders share a parent)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
            build(folder)
            done.touch()
    return folder


def run_script(script: str, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``train.py`` or ``eval.py`` as a user would, from the project root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop("BRAIN_MRI_DATA", None)
    return subprocess.run(
        [sys.executable, script, *overrides],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def corrupt_copy(source: Path, target: Path) -> tuple[Path, list[str]]:
    """A copy of a data set with four kinds of unreadable file planted in it."""
    shutil.copytree(source, target)
    good = next((target / "yes").glob("*.jpg"), None) or next((target / "yes").glob("*.png"))
    (target / "yes" / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (target / "no" / "empty.jpg").write_bytes(b"")
    (target / "no" / "notes.jpg").write_text("this is not an image")
    (target / "yes" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return target, ["no/empty.jpg", "no/notes.jpg", "yes/garbage.png", "yes/truncated.jpg"]
