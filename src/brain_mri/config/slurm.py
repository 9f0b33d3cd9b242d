"""Tasks under Slurm: the cluster preset (``hydra/launcher=slurm``) checked before any job is queued, one
run folder for all tasks of an ``srun`` step, and a requeued job sent back to the folder it started.

The tasks of a step each compose their own config, so their default folder names (the time to the
second) may differ: the first task claims a folder and records it under ``paths.log_dir/.slurm_jobs``,
by job, step and command; the others, and the same command when Slurm starts the job again after a
requeue, read it there. A shared file system between the job's nodes is assumed, as Slurm clusters have.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from brain_mri.cluster import SlurmJob, partitions, slurm_job
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import LAST_CHECKPOINT, read_json, write_json

log = logging.getLogger(__name__)

JOBS_DIR = ".slurm_jobs"  # under paths.log_dir: the run folder each Slurm job's command claimed
FIRST_TASK_WAIT_S = 120  # how long the other tasks of a step wait for the first one's folder


def uses_slurm_launcher(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(".SlurmLauncher")


def check_slurm_launcher(config: DictConfig) -> None:
    """What the cluster preset asks of Slurm, checked before any job is queued: that Slurm answers, its
    settings' names, the partition, a time limit, and no more nodes, CPUs, memory or GPUs than the
    partition's nodes have (such a job would wait in the queue for ever)."""
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    launcher = config.hydra.launcher
    known = sorted(field.name for field in fields(SlurmQueueConf) if field.name != "_target_")
    unknown = sorted(set(launcher) - {*known, "_target_"})
    if unknown:
        raise BrainMRIError(
            f"hydra.launcher.{unknown[0]} is not a setting of the Slurm launcher; its settings: "
            f"{', '.join(known)}. Other sbatch options: "
            "+hydra.launcher.additional_parameters.<option>=<value>."
        )
    timeout = launcher.get("timeout_min")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise BrainMRIError(
            f"hydra.launcher.timeout_min must be the job's time limit in whole minutes (e.g. 120 for two "
            f"hours), got {timeout!r}."
        )
    nodes, num_nodes = launcher.get("nodes") or 1, OmegaConf.select(config, "trainer.num_nodes") or 1
    if num_nodes > nodes:
        raise BrainMRIError(
            f"trainer.num_nodes={num_nodes} but hydra.launcher.nodes={nodes} asks Slurm for {nodes}: set "
            f"hydra.launcher.nodes={num_nodes} and hydra.launcher.tasks_per_node to trainer.devices."
        )
    found = partitions()
    names = [partition.name for partition in found]
    chosen = launcher.get("partition") or (names[0] if names else None)
    if chosen not in names:
        raise BrainMRIError(
            f"hydra.launcher.partition={chosen}: this cluster has no such partition. Its partitions: "
            f"{', '.join(names)} (the first is its default, used when the setting is null)."
        )
    partition = found[names.index(chosen)]
    tasks = launcher.get("tasks_per_node") or 1
    cpus = (launcher.get("cpus_per_task") or 1) * tasks
    gpus = max(launcher.get("gpus_per_node") or 0, (launcher.get("gpus_per_task") or 0) * tasks)
    beyond = [
        (
            f"nodes={nodes}",
            f"{partition.nodes} node{'s' if partition.nodes > 1 else ''}",
            nodes > partition.nodes,
        ),
        (
            f"cpus_per_task={launcher.get('cpus_per_task')} (x tasks_per_node={tasks})",
            f"{partition.cpus} CPUs per node",
            cpus > partition.cpus,
        ),
        (
            f"mem_gb={launcher.get('mem_gb')}",
            f"{partition.memory_gb:.0f} GB per node",
            (launcher.get("mem_gb") or 0) > partition.memory_gb,
        ),
        (f"gpus_per_node={gpus}", f"{partition.gpus} GPUs per node", gpus > partition.gpus),
    ]
    for asked, has, too_much in beyond:
        if too_much:
            raise BrainMRIError(
                f"hydra.launcher.{asked} asks for more than partition {chosen} has ({has}): the jobs would "
                "wait in the queue for ever. Ask for less, or choose another partition."
            )


def job_record(config: DictConfig, job: SlurmJob) -> Path:
    return Path(config.paths.log_dir) / JOBS_DIR / f"{job.command_key}.json"


def remember_folder(config: DictConfig, job: SlurmJob, folder: Path) -> None:
    """Record the folder the first task claimed, for the step's other tasks and for a requeue."""
    write_json(job_record(config, job), {"folder": str(folder.resolve()), "restarts": job.restarts})


def first_task_folder(config: DictConfig, job: SlurmJob) -> Path | None:
    """The folder the step's first task claimed in this start of the job; None (with a warning) when it
    recorded none in time."""
    record, waited = job_record(config, job), time.monotonic()
    while time.monotonic() - waited < FIRST_TASK_WAIT_S:
        if record.is_file():
            claimed = read_json(record)
            if claimed.get("restarts") == job.restarts:
                return Path(claimed["folder"])
        time.sleep(0.2)
    log.warning(
        "Task %d of Slurm job %s found no run folder of its first task in %s after %d s: it writes its "
        "own (no shared file system?).",
        job.task,
        job.job_id,
        record.parent,
        FIRST_TASK_WAIT_S,
    )
    return None


def requeued_folder(config: DictConfig, job: SlurmJob) -> Path | None:
    """The folder this command claimed in an earlier start of its job, when Slurm has requeued it."""
    record = job_record(config, job)
    if job.restarts == 0 or not record.is_file():
        return None
    claimed = read_json(record)
    folder = Path(claimed["folder"])
    return folder if claimed.get("restarts", 0) < job.restarts and folder.is_dir() else None


def is_requeued_run(output_dir: Path) -> bool:
    """Whether this training continues a run that Slurm stopped and started again in the same folder
    (with a finished epoch to continue from)."""
    job = slurm_job()
    return job is not None and job.restarts > 0 and (output_dir / LAST_CHECKPOINT).is_file()
