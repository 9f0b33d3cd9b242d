"""Slurm, in one place: the job this process runs in (read from the variables Slurm sets; none outside a
job) and what the cluster answers about itself (its partitions), asked before any job is queued."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from brain_mri.errors import BrainMRIError


@dataclass(frozen=True)
class SlurmJob:
    """A Slurm job's identity as one of its tasks sees it."""

    job_id: str  # <array job>_<task> for a task of a job array
    step: str  # the step (srun) this task belongs to; "batch" in the batch script itself
    restarts: int  # how often Slurm has requeued the job (0 on its first start)
    task: int  # this task's rank among the step's tasks
    tasks: int  # the step's (or the batch script's) number of tasks
    nodes: int  # nodes allocated to the job

    @property
    def command_key(self) -> str:
        """Names this command in this job step, the same in every task and after a requeue: a batch
        script may run several commands in one step."""
        command = hashlib.sha256("\0".join(sys.argv).encode()).hexdigest()[:12]
        return f"{self.job_id}.{self.step}.{command}"


def slurm_job() -> SlurmJob | None:
    """The Slurm job of this process, or None outside Slurm."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array = env.get("SLURM_ARRAY_JOB_ID")
    return SlurmJob(
        job_id=f"{array}_{env['SLURM_ARRAY_TASK_ID']}" if array else env["SLURM_JOB_ID"],
        step=env.get("SLURM_STEP_ID", "batch"),
        restarts=int(env.get("SLURM_RESTART_COUNT") or 0),
        task=int(env.get("SLURM_PROCID") or 0),
        tasks=int(env.get("SLURM_NTASKS") or 1),
        nodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
    )


def allocated_nodes() -> int:
    """The nodes a training run may span: the Slurm job's, or any number outside Slurm."""
    job = slurm_job()
    return job.nodes if job is not None else sys.maxsize


NO_SLURM = (
    "no Slurm answers here: run it on a cluster's login node, or start a one-node cluster on this "
    "computer with scripts/slurm/local-cluster.sh up (as root; see docs/cluster.md)"
)


def partitions() -> list[str]:
    """The cluster's partitions, its default first; one message when no Slurm answers."""
    if shutil.which("sinfo") is None:
        raise BrainMRIError(f"{NO_SLURM} (the command sinfo is not installed).")
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise BrainMRIError(f"{NO_SLURM} (sinfo gave no answer in 30 s).") from None
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()
        raise BrainMRIError(f"{NO_SLURM} (sinfo: {said[-1] if said else f'exit {answer.returncode}'}).")
    names = [line.strip() for line in answer.stdout.splitlines() if line.strip()]
    default = [name.rstrip("*") for name in names if name.endswith("*")]
    return default + [name for name in dict.fromkeys(names) if not name.endswith("*")]
