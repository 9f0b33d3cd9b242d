"""What the Hydra entry points (train.py, eval.py) share: the config resolvers and schemas they need
(:func:`register`), the task runner that reports user errors plainly and keeps sweeps going, and the
Hydra callback that checks the output folder before Hydra writes anything (each task checks its own
settings, once, before it reads or writes anything)."""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from brain_mri.atomic import DISK_FULL, disk_full, interrupt_between_writes
from brain_mri.cluster import slurm_job
from brain_mri.config.settings import register_schemas
from brain_mri.config.slurm import (
    check_slurm_launcher,
    first_task_folder,
    remember_folder,
    requeued_folder,
    uses_slurm_launcher,
)
from brain_mri.errors import BrainMRIError, print_undecodable_escaped, stop, user_error
from brain_mri.hardware import best_precision
from brain_mri.runs.files import CONFIG_FILE, METRICS_FILE, failure_record, read_json, write_json
from brain_mri.runs.resume import LOCK_FILE, check_run_folder

log = logging.getLogger(__name__)


def register() -> None:
    """Register the config resolvers and schemas (idempotent). The entry points call it before Hydra
    composes; it also runs when this module is imported, because the processes of a joblib or submitit
    launcher only import the modules the task needs before they resolve the config."""
    resolvers: dict[str, Callable[..., Any]] = {
        # ${first_set:a,b}: a unless it is null or empty, else b (resume=<run> reuses the run's folder)
        "first_set": lambda value, default: value or default,
        # ${config_subdir:${resume}}: where Hydra saves the config; nowhere on resume (the run keeps its own)
        "config_subdir": lambda resume: None if resume else ".hydra",
        # ${best_precision:<accelerator>}: bf16-mixed where the hardware has bf16, else 16-mixed or 32-true
        "best_precision": best_precision,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
    register_schemas()


register()


def run_task(task: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run ``task(cfg)``.

    A single run that meets a user-input problem exits with its message, not a traceback. In a sweep, a
    failing job (any exception) is recorded as failed in its ``metrics.json`` and returns NaN, which the
    sweepers treat as a failed trial, so the other jobs still run.
    """
    print_undecodable_escaped()
    try:
        with sigterm_raises():
            return task(cfg)
    except SIGTERMException:  # Lightning's, a SystemExit of status 0: a stop asked for is not a success
        print(f"Interrupted by SIGTERM (its state is in {cfg.paths.output_dir}).", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the launcher stops here: say what never ran
            number = HydraConfig.get().job.num
            print(
                f"The sweep was interrupted in job {number} ({cfg.paths.output_dir}): jobs after it never "
                "started. python -m brain_mri.report <sweep folder> lists the jobs that ran.",
                file=sys.stderr,
            )
        raise
    except Exception as caught:
        err = user_error(caught) or caught
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # a write outside the project's own writer
            err = disk_full(err.filename or cfg.paths.output_dir)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            if isinstance(err, BrainMRIError):  # a setting or input problem: its message is enough
                log.error("Job failed; the sweep goes on. Error: %s", err)
            else:
                log.exception("Job failed; the sweep goes on")
            if getattr(rank_zero_only, "rank", 0) == 0:
                write_json(Path(cfg.paths.output_dir) / METRICS_FILE, failure_record(err))
            return math.nan
        if not isinstance(err, BrainMRIError):
            raise
        write_to_log_files(f"Stopped: {err}")
        kept = set_aside_unstarted(Path(cfg.paths.output_dir), Path(cfg.paths.log_dir) / FAILED_STARTS_DIR)
        stop(f"{err}\nThe log: {kept}" if kept else err)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) raises Lightning's SIGTERMException in this process, in
    evaluation and prediction too, so that files being written are cleaned up and the task says it was
    interrupted; Lightning adds its own handling while it trains. Only the main thread can set it."""

    def interrupt(signum, frame):
        interrupt_between_writes(SIGTERMException())  # a file being written is finished first

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


FAILED_STARTS_DIR = "failed_starts"  # under paths.log_dir: the logs of runs that stopped before any work


def set_aside_unstarted(output_dir: Path, failed_starts: Path) -> Path | None:
    """A task that stopped before writing anything of its own (only Hydra's ``.hydra/`` and the log are
    there) leaves no folder among the runs: its log is moved to ``failed_starts`` and the folder removed.
    Returns where the log went, or None when the folder holds the task's own files (a resumed run's)."""
    try:
        entries = list(output_dir.iterdir())
    except OSError:
        return None
    logs = [entry for entry in entries if entry.suffix == ".log" and entry.is_file()]
    if len(logs) != 1 or any(
        entry.name not in (".hydra", CLAIM_FILE) and entry not in logs for entry in entries
    ):
        return None
    failed_starts.mkdir(parents=True, exist_ok=True)
    kept = failed_starts / f"{output_dir.name}_{logs[0].name}"
    shutil.move(logs[0], kept)  # Hydra's log handler writes on into the moved file
    shutil.rmtree(output_dir)
    return kept


def write_to_log_files(message: str) -> None:
    """An error and its traceback in the job's log file (train.log, eval.log), which would otherwise end
    without a word of why, but not a second time on the console, where :func:`stop` prints it plainly."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def optimized_value(cfg: DictConfig, results: dict, default: str) -> float:
    """The result the config names as ``optimized_metric`` (``default`` for configs from before it), for
    the sweepers."""
    name = cfg.get("optimized_metric") or default
    if name not in results:
        raise BrainMRIError(
            f"optimized_metric={name} is not a result of this task: {', '.join(sorted(results))}"
        )
    return float(results[name])


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger`` (entries may be null)."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


CLAIM_FILE = ".claimed"  # created first, exclusively: the folder belongs to the run that created it
RUN_FILES = (".hydra", CLAIM_FILE, CONFIG_FILE, METRICS_FILE, LOCK_FILE)  # a folder holding one is a run's


def claim_folder(folder: Path, named_by_user: bool, resumable: bool = True) -> Path:
    """Make ``folder`` this run's before anything is written: its claim file is created exclusively, so
    that two runs started in the same second never share a folder. A folder of the default name that is
    another run's gives way to ``<folder>_2``, ``_3``, ...; one the user named is refused (naming
    ``resume=`` where the task is ``resumable``). A folder that cannot be created or written is one
    message."""
    candidate = folder
    for number in itertools.count(2):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if any((candidate / name).exists() for name in RUN_FILES):
                raise FileExistsError
            with open(candidate / CLAIM_FILE, "x") as claim:
                claim.write(f"{os.getpid()}@{socket.gethostname()}\n")
            return candidate
        except FileExistsError:
            if named_by_user:
                resume = f", or continue that run with resume={folder}" if resumable else ""
                stop(f"{folder} holds another run: choose a new folder (hydra.run.dir=...){resume}.")
            candidate = folder.with_name(f"{folder.name}_{number}")
        except OSError as err:
            unwritable(candidate, err)
    raise AssertionError("unreachable")


def claim_output_folder(config: DictConfig, key: str, named_by_user: bool) -> None:
    """Claim the folder ``hydra.<key>.dir`` names and set it to the folder claimed."""
    node = config.hydra[key]
    claimed = claim_folder(Path(node.dir), named_by_user, resumable=config.get("task_name") == "train")
    with read_write(config.hydra), open_dict(config.hydra):
        node.dir = str(claimed)


def use_folder_of_its_run(config: DictConfig, folder: Path) -> None:
    """Run in ``folder``, which another process of the same run claimed (its ``.hydra/`` is left as it
    was written)."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.run.dir = str(folder)
        config.hydra.output_subdir = None


def started_by_another_process() -> bool:
    """Whether this process is one of a run's other processes: a DDP rank Lightning started anew with the
    same command, or a process of another machine (``NODE_RANK``, a cluster's task number)."""
    return getattr(rank_zero_only, "rank", 0) > 0 or int(os.environ.get("NODE_RANK", 0) or 0) > 0


def check_writable(folder: Path) -> None:
    """Stop with one message, before any work, when ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".write-test").write_text("")
        (folder / ".write-test").unlink()
    except OSError as err:
        unwritable(folder, err)


def unwritable(folder: Path, err: OSError) -> NoReturn:
    stop(
        f"cannot write the output folder {folder} ({err.strerror}). "
        "Choose another with hydra.run.dir=... / hydra.sweep.dir=... or paths.log_dir=..."
    )


class OutputFolderCheck(Callback):
    """Hydra callback: checks the run or sweep folder before Hydra itself writes into it (a resumed
    run's: that it is a run that no process trains). The task checks its settings; a run stopped by them
    leaves its log in ``failed_starts``, not a folder among the runs."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # Hydra sets it only later; the folder's path needs it
        moved = [o for o in config.hydra.overrides.hydra if o.startswith("hydra.run.dir=")]
        if config.get("resume") and moved:
            stop(f"resume= continues a run in its own folder; drop {moved[0]}.")
        if config.get("resume"):  # the run's own folder: a run, trained by no other process, or untouched
            try:
                check_run_folder(Path(config.resume))
            except BrainMRIError as err:
                stop(err)
            return
        job = slurm_job()
        if started_by_another_process():  # the folder is the first process's, claimed by it
            if job is not None and (first := first_task_folder(config, job)) is not None:
                use_folder_of_its_run(config, first)
            check_writable(Path(config.hydra.run.dir))
        elif job is not None and (earlier := requeued_folder(config, job)) is not None:
            use_folder_of_its_run(config, earlier)
            remember_folder(config, job, earlier)
        else:
            named = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
            claim_output_folder(config, "run", named_by_user=named)
            if job is not None:
                remember_folder(config, job, Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)
        if uses_slurm_launcher(config):
            try:
                check_slurm_launcher(config)
            except BrainMRIError as err:
                stop(err)
        if OmegaConf.select(config, "hydra.launcher.n_jobs") == 0:  # joblib: -1 is every core, 0 nothing
            stop("hydra.launcher.n_jobs must not be 0 (-1: one job per core).")
        if any(o.startswith("hydra.sweep.dir=") for o in config.hydra.overrides.hydra):
            check_writable(Path(config.hydra.sweep.dir))  # a named one may gain jobs
        else:  # two sweeps started in the same second get a folder each
            claim_output_folder(config, "sweep", named_by_user=False)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """Say how many jobs failed; a sweep in which every job failed exits with status 1."""
        records = [read_json(p) for p in Path(config.hydra.sweep.dir).glob(f"*/{METRICS_FILE}")]
        failed = [r for r in records if r.get("status") == "failed"]
        if failed:
            print(
                f"{len(failed)} of {len(records)} jobs failed (see their metrics.json; "
                f"python -m brain_mri.report {config.hydra.sweep.dir} lists them).",
                file=sys.stderr,
            )
        if records and len(failed) == len(records):
            sys.exit(1)
