"""Resuming and continuing runs, in one place: ``resume=<run>`` (an interrupted run, in its own folder:
which settings it may change, a moved or copied folder, the checkpoints and log rows it redoes, the
lock that keeps two processes out of one folder) and ``ckpt_path=<last.ckpt>`` (a run's training state
in a new folder: what must match the checkpoint, what is left to train). The training task calls
:func:`config_for_resume` and :func:`prepare_resumed_folder` once each."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from brain_mri.cluster import slurm_job
from brain_mri.errors import BrainMRIError
from brain_mri.runs.checkpoints import AtomicCheckpointIO, load_checkpoint
from brain_mri.runs.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EPOCH_LOG,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RUN_INFO_FILE,
    SPLIT_FILE,
    is_inside,
    read_config,
    read_csv,
    read_json,
    run_folder_of,
    run_overrides,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)


# What a resumed run may change: how long it goes on, and settings that do not change its numbers.
RESUME_MAY_CHANGE = (
    "trainer.max_epochs",
    "trainer.max_time",
    "callbacks.early_stopping.patience",
    "data.num_workers",
    "data.cache_dir",
)


def command_line_overrides() -> list[str]:
    """The task's overrides from the command line (none when the task is called outside Hydra's main)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def relocated(node: Any, old: str, new: str) -> Any:
    """``node`` (dicts, lists, strings, other values) with every path inside the ``old`` run folder,
    dictionary keys included, moved into ``new``."""
    if isinstance(node, dict):
        return {relocated(key, old, new): relocated(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [relocated(value, old, new) for value in node]
    return new + node[len(old) :] if is_inside(node, old) else node


# Modules whose classes a run's saved config names (``_target_``) before the package was laid out by
# concern: a run saved then resumes with the same classes at their new homes.
MOVED_MODULES = {
    "brain_mri.callbacks.": "brain_mri.training.callbacks.",
    "brain_mri.loggers.": "brain_mri.training.loggers.",
    "brain_mri.checkpoints.": "brain_mri.runs.checkpoints.",
    "brain_mri.preprocessing.": "brain_mri.data.preprocessing.",
}


def current_targets(node: Any) -> Any:
    """``node`` with every ``_target_`` in a moved module (``MOVED_MODULES``) named at its new home."""
    if isinstance(node, list):
        return [current_targets(value) for value in node]
    if not isinstance(node, dict):
        return node
    moved = {key: current_targets(value) for key, value in node.items()}
    target = moved.get("_target_")
    for old, new in MOVED_MODULES.items():
        if isinstance(target, str) and target.startswith(old):
            moved["_target_"] = new + target[len(old) :]
    return moved


def folder_trained_in(checkpoint: dict) -> str | None:
    """The run folder a checkpoint's checkpoint callbacks saved into when it was written."""
    for state in checkpoint.get("callbacks", {}).values():
        if isinstance(state, dict) and state.get("dirpath"):
            return str(Path(state["dirpath"]).parent)
    return None


def move_run(cfg: DictConfig, run_dir: Path, last: dict) -> DictConfig:
    """A copied or moved run, made to continue where it is now. Its checkpoints name the folder they were
    saved in (their checkpoint callbacks' state, which Lightning drops, with the best score so far, for
    another folder): they are rewritten in place, atomically, as they belong to this folder. Once ``last``
    (its ``last.ckpt``) names this folder, all of them do. Its resolved config spells out the folder the
    run started in, in each callback and logger, and the classes it names at their current homes."""
    new = str(run_dir.resolve())
    if Path(folder_trained_in(last) or new).resolve() != Path(new):
        for path in sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
            checkpoint = load_checkpoint(path)
            old = folder_trained_in(checkpoint)
            if old is not None and Path(old).resolve() != Path(new):
                log.info("%s was saved in %s; the run continues in %s.", path.name, old, new)
                checkpoint["callbacks"] = relocated(checkpoint["callbacks"], old, new)
                AtomicCheckpointIO().save_checkpoint(checkpoint, path)
    saved = current_targets(OmegaConf.to_container(cfg))
    moved = OmegaConf.create(relocated(saved, str(cfg.paths.output_dir), new))
    assert isinstance(moved, DictConfig)
    return moved


def config_for_resume(run_dir: Path, composed: DictConfig, requeued: bool = False) -> tuple[DictConfig, dict]:
    """The interrupted run's own config, set to continue from its ``last.ckpt`` on its own split, with the
    command line's changes that a resume may make (``RESUME_MAY_CHANGE``); any other change is refused.
    A job that Slurm ``requeued`` repeats the run's own command line, which changes nothing.
    Returns the config and the record of this resume for ``run_info.json``."""
    last = check_run_folder(run_dir)
    overrides = [] if requeued else command_line_overrides()
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)]
    refused = sorted({key for key in keys if key not in (*RESUME_MAY_CHANGE, "resume")})
    if refused:
        raise BrainMRIError(
            f"resume= continues {run_dir} with its own settings, so these cannot change: "
            f"{', '.join(refused)}. A resume may change {', '.join(RESUME_MAY_CHANGE)}. To train on with "
            f"other settings (not the optimizer's), start a new run with ckpt_path={last}; to fine-tune "
            f"its weights with any other settings (learning rate, optimizer, recipe, data): init_from={last}."
        )
    cfg = config_as_resumed(run_dir)  # with what earlier resumes changed (a longer run, say)
    assert isinstance(cfg, DictConfig)
    checkpoint = load_checkpoint(last)
    cfg = move_run(cfg, run_dir, checkpoint)  # a copied or moved run continues where it is now

    for key in keys:
        if key != "resume":
            OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
    cfg.ckpt_path, cfg.data.split_file = str(last), str(run_dir / SPLIT_FILE)
    check_schedule_length(checkpoint, str(last), cfg.trainer.max_epochs)
    record = {
        "command": " ".join(sys.argv),
        "overrides": overrides,
        "checkpoint": str(last),
        "first_epoch": checkpoint["epoch"] + 1,  # 0-based, as in metrics.csv
        "first_step": checkpoint["global_step"],
        "checkpoints_removed": checkpoints_to_redo(run_dir, checkpoint),
    }
    if requeued and (job := slurm_job()) is not None:
        record["slurm_requeue"] = {"job": job.job_id, "restart": job.restarts}
    check_epochs_left(record["first_epoch"], cfg.trainer.max_epochs)
    check_patience_left(checkpoint, str(last), OmegaConf.select(cfg, "callbacks.early_stopping.patience"))
    return cfg, record


def checkpoints_to_redo(run_dir: Path, last: dict) -> list[str]:
    """Checkpoints of the epochs a resume trains again: a best one that the interrupted process saved
    after its last ``last.ckpt`` would stay beside the real best. Only files that ``last`` (its
    ``last.ckpt``) does not know are read, to see their epoch."""
    known = {Path(LAST_CHECKPOINT).name}
    for state in last.get("callbacks", {}).values():
        known |= {Path(p).name for p in [*state.get("best_k_models", {}), state.get("best_model_path") or ""]}
    unknown = [p for p in sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) if p.name not in known]
    return [p.name for p in unknown if load_checkpoint(p)["epoch"] > last["epoch"]]


def check_epochs_left(epochs_done: int, max_epochs: int) -> None:
    """A run continued from a checkpoint must have epochs left to train."""
    if epochs_done >= max_epochs:
        raise BrainMRIError(
            f"The checkpoint has already trained {epochs_done} epochs and trainer.max_epochs={max_epochs}: "
            f"nothing is left. To train longer, raise it (e.g. trainer.max_epochs={epochs_done + 10})."
        )


def check_patience_left(checkpoint: dict, path: str, patience: int | None) -> None:
    """A run that early stopping ended goes on only with more patience than it ran out of (else it would
    train one more epoch and stop, or go on if that one happened to be better)."""
    states = checkpoint.get("callbacks", {})
    waited = max((s["wait_count"] for k, s in states.items() if k.startswith("EarlyStopping")), default=0)
    if patience is not None and waited >= max(patience, 1):  # after a better epoch it waits 0: not ended
        best = next(
            (Path(s["best_model_path"]).name for s in states.values() if s.get("best_model_path")), ""
        )
        raise BrainMRIError(
            f"Early stopping ended {run_folder_of(path)} after epoch {checkpoint['epoch']}: its last "
            f"{waited} epochs brought no better validation, and callbacks.early_stopping.patience="
            f"{patience} waits {patience} at most. To train on, raise it (e.g. "
            f"callbacks.early_stopping.patience={waited + 5}); to test its best "
            f"checkpoint: python eval.py ckpt_path={run_folder_of(path) / CHECKPOINT_DIR / best}."
        )


def check_schedule_length(checkpoint: dict, path: str, max_epochs: int) -> None:
    """A one-cycle or cosine schedule is made for its run's length, and Lightning restores it from the
    checkpoint: continuing with another ``trainer.max_epochs`` would step past its end (one-cycle) or
    jump back up (cosine)."""
    scheduler = checkpoint.get("hyper_parameters", {}).get("scheduler", "constant")
    if scheduler == "constant" or not checkpoint.get("lr_schedulers"):
        return
    config = run_folder_of(path) / CONFIG_FILE
    planned = OmegaConf.select(read_config(config), "trainer.max_epochs") if config.is_file() else None
    if planned != max_epochs:
        raise BrainMRIError(
            f"{path} follows a {scheduler} schedule made for trainer.max_epochs={planned} (its run's "
            f"config), so it cannot continue with trainer.max_epochs={max_epochs}. Start a new run, or "
            f"fine-tune its weights with init_from={path}."
        )


def checkpoint_folder_message(folder: Path) -> str:
    """Training continues from a checkpoint file; for a run folder or its checkpoints/, say which."""
    run = next((f for f in (folder, folder.parent) if (f / LAST_CHECKPOINT).is_file()), None)
    message = f"ckpt_path={folder} is a folder; training continues from a checkpoint file."
    if run is not None:
        message += (
            f" To continue that run in its folder: resume={run}; to start a new run from its state: "
            f"ckpt_path={run / LAST_CHECKPOINT}."
        )
    return message


# ckpt_path= restores the checkpoint's optimizer and schedule with their state (Lightning's full restore):
# another optimizer fails to load, and another learning rate would be replaced by the saved one in silence
RESTORED_WITH_THE_OPTIMIZER = (
    "arch",
    "optimizer",
    "lr",
    "weight_decay",
    "scheduler",
    "warmup_fraction",
    "decay_norms_and_biases",
    "freeze_backbone_epochs",
)


def check_restored_settings(checkpoint: dict, path: str, model: DictConfig) -> None:
    saved = checkpoint["hyper_parameters"]
    changed = [
        f"model.{key}={model.get(key)} (the checkpoint's: {saved[key]})"
        for key in RESTORED_WITH_THE_OPTIMIZER
        if key in saved and key in model and model.get(key) != saved[key]
    ]
    if changed:
        raise BrainMRIError(
            f"ckpt_path={path} continues that checkpoint's training, its optimizer and schedule included, "
            f"so these cannot differ from it: {'; '.join(changed)}. Set them as the checkpoint has them "
            f"(e.g. the same experiment=...), or start from its weights alone with new settings: "
            f"init_from={path}."
        )


def check_full_state(checkpoint: dict, path: str) -> None:
    """Training continues only from a checkpoint with its optimizer state (``last.ckpt``); a best
    checkpoint holds the weights alone."""
    if "optimizer_states" not in checkpoint:
        raise BrainMRIError(
            f"ckpt_path={path} holds weights only (a best checkpoint keeps no optimizer state), so its "
            f"training cannot continue: use its run's {LAST_CHECKPOINT}, or start a new training from "
            f"these weights with init_from={path}."
        )


def resume_changes(run_dir: Path) -> list[str]:
    """The overrides of a run's resumes, in order (``run_info.json``; its config files stay as they were
    written when it started)."""
    info = read_json(run_dir / RUN_INFO_FILE) if (run_dir / RUN_INFO_FILE).is_file() else {}
    return [
        o for resume in info.get("resumes", []) for o in resume["overrides"] if not o.startswith("resume=")
    ]


def config_as_resumed(run_dir: Path) -> Any:
    """A run's resolved config with the changes its resumes made (a later resume goes on with them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    config = read_config(run_dir / CONFIG_FILE)
    for change in OverridesParser.create().parse_overrides(resume_changes(run_dir)):
        OmegaConf.update(config, change.key_or_group, change.value(), merge=False)
    return config


def record_resume(output_dir: Path, record: dict) -> None:
    """Append one resume (time, command, overrides, checkpoint, first epoch) to ``run_info.json``; the
    run's own config files stay as they were written when it started."""
    from datetime import datetime, timezone

    info = read_json(output_dir / RUN_INFO_FILE) if (output_dir / RUN_INFO_FILE).is_file() else {}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info["resumes"] = [*info.get("resumes", []), {"time": started, **record}]
    write_json(output_dir / RUN_INFO_FILE, info)


LOCK_FILE = "training.lock"


class RunFolderLocked(BrainMRIError):
    """Another process trains in the run folder."""


def lock_run_folder(run_dir: Path) -> FileLock:
    """Hold the run folder's lock while this process trains in it, so that a resume cannot run beside it.
    The operating system releases it when the process ends, however it ends (a killed run leaves no stale
    lock); the file itself stays."""
    lock = FileLock(run_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunFolderLocked(f"{run_dir} is being trained by another process.") from None
    return lock


def is_being_trained(run_dir: Path) -> bool:
    """Whether a process (on any machine that shares the folder's file system) holds the run's lock."""
    if not (run_dir / LOCK_FILE).is_file():  # never trained here: no lock file to create in it
        return False
    try:
        with FileLock(run_dir / LOCK_FILE, timeout=0):
            return False
    except Timeout:
        return True


def check_run_folder(run_dir: Path) -> Path:
    """``run_dir`` as a run that can be resumed: a run folder of this project with a finished epoch,
    which no process is still training."""
    if is_being_trained(run_dir):
        raise BrainMRIError(f"{run_dir} is still being trained by another process: stop that process first.")
    if not run_dir.is_dir():
        raise BrainMRIError(f"No run folder at {run_dir} to resume.")
    if not (run_dir / CONFIG_FILE).is_file():
        raise BrainMRIError(f"{run_dir} is not a run folder of this project (no {CONFIG_FILE}).")
    if not (run_dir / LAST_CHECKPOINT).is_file():
        saved = sorted((run_dir / CHECKPOINT_DIR).glob("*.ckpt"))
        settings = [shlex.quote(o) for o in run_overrides(run_dir) if not o.startswith("hydra.")]
        again = " ".join(["python train.py", *settings])
        why = (
            f"the run stopped before it saved one (killed in its first epoch, between saving its best "
            f"checkpoint and last.ckpt), or it was not kept (callbacks.last_checkpoint=null) or was "
            f"deleted. A new run with its settings can train on from its best weights (with a new "
            f"optimizer state): {again} init_from={saved[0]}; or start it again: {again}"
            if saved
            else f"it stopped before its first epoch ended. Start it again with its settings: {again}"
        )
        raise BrainMRIError(f"{run_dir} has no {LAST_CHECKPOINT} to resume from: {why}")
    if (run_dir / EPOCH_LOG).is_file():
        read_csv(run_dir / EPOCH_LOG)  # a damaged log is one message now, before the resume rewrites it
    for path in sorted(run_dir.rglob("*")):
        shared = (
            f"a link to {os.readlink(path)}"
            if path.is_symlink()
            else "hard-linked to another file"
            if path.is_file() and path.stat().st_nlink > 1
            else None
        )
        if shared:
            raise BrainMRIError(
                f"{path} is {shared}: a resume writes into the run's files (its log, tables and "
                "checkpoints), so it would change the run they belong to. Copy the run with its files "
                "(cp -a, not cp -s or cp -l) and resume the copy."
            )
    return run_dir / LAST_CHECKPOINT


def keep_epochs_up_to(csv_file: Path, last_epoch: int, first_step: int) -> None:
    """Drop CSV log rows of epochs after ``last_epoch``, rows without an epoch (the learning rate) from
    ``first_step`` on, and the test row: a resumed run logs those again and tests anew at its end (under
    ddp_spawn the test row says epoch 0)."""
    if not csv_file.is_file():
        return
    rows = read_csv(csv_file)
    fields = tuple(rows[0]) if rows else ()
    tested = [f for f in fields if f.startswith("test/")]
    kept = [
        r
        for r in rows
        if (int(r["epoch"]) <= last_epoch if r.get("epoch") else int(r.get("step") or 0) < first_step)
        and not any(r.get(f) for f in tested)
    ]
    write_csv(csv_file, kept, fields)


def prepare_resumed_folder(output_dir: Path, resume: dict) -> None:
    """A resumed run's folder before it trains again: the resume recorded, the log rows and checkpoints
    of the epochs it redoes dropped; its results are redone, so until then it reads as incomplete."""
    record_resume(output_dir, resume)
    keep_epochs_up_to(output_dir / EPOCH_LOG, resume["first_epoch"] - 1, resume["first_step"])
    (output_dir / METRICS_FILE).unlink(missing_ok=True)
    for name in resume["checkpoints_removed"]:
        log.info("Removing %s: saved in an epoch this resume trains again.", name)
        (output_dir / CHECKPOINT_DIR / name).unlink(missing_ok=True)
    for path in sorted(output_dir.glob("hpc_ckpt_*.ckpt")):
        log.info(
            "Removing %s: Lightning saved it in mid-epoch when Slurm asked the job to stop; the run goes on "
            "from the end of its last whole epoch (%s), as an uninterrupted run would.",
            path.name,
            LAST_CHECKPOINT,
        )
        path.unlink()
