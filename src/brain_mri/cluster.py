"""Slurm, in one place: the job this process runs in (read from the variables Slurm sets; none outside a
job) and what the cluster answers about itself (its partitions), asked before any job is queued."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace

from brain_mri.errors import BrainMRIError


@dataclass(frozen=True)
class SlurmJob:
    """A Slurm job's identity as one of its tasks sees it."""

    job_id: str  # <array job>_<task> for a task of a job array
    step: str  # the step (srun) this task belongs to; "batch" in the batch script itself
    restarts: int  # how often Slurm has requeued the job (0 on its first start)
    task: int  # this task's rank among the step's tasks
    nodes: int  # nodes allocated to the job
    # tasks per node when Lightning takes its processes from Slurm (--ntasks-per-node), which then must
    # equal trainer.devices; None when not given, or in a job named bash or interactive (Lightning's rule)
    tasks_per_node: int | None

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
        nodes=int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
        tasks_per_node=(
            int(env["SLURM_NTASKS_PER_NODE"])
            if env.get("SLURM_NTASKS_PER_NODE", "").isdigit() and env.get("SLURM_JOB_NAME") not in INTERACTIVE
            else None
        ),
    )


INTERACTIVE = ("bash", "interactive")  # job names under which Lightning starts its own processes


NO_SLURM = (
    "no Slurm answers here: run it on a cluster's login node, or start a one-node cluster on this "
    "computer with scripts/slurm/local-cluster.sh up (as root; see docs/cluster.md)"
)


@dataclass(frozen=True)
class Partition:
    """What a partition's largest node holds, and how many nodes it has."""

    name: str
    default: bool
    nodes: int
    cpus: int  # per node
    memory_gb: float  # per node
    gpus: int  # per node


def partitions() -> list[Partition]:
    """The cluster's partitions, its default first; one message when no Slurm answers."""
    if shutil.which("sinfo") is None:
        raise BrainMRIError(f"{NO_SLURM} (the command sinfo is not installed).")
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--format=%P|%D|%c|%m|%G"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise BrainMRIError(f"{NO_SLURM} (sinfo gave no answer in 30 s).") from None
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()
        raise BrainMRIError(f"{NO_SLURM} (sinfo: {said[-1] if said else f'exit {answer.returncode}'}).")
    found: dict[str, Partition] = {}
    for line in answer.stdout.splitlines():  # a line per kind of node in a partition
        if line.count("|") != 4:
            continue
        name, nodes, cpus, memory, gres = line.strip().split("|")
        gpus = max((int(count) for count in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)), default=0)
        this = Partition(
            name.rstrip("*"), name.endswith("*"), leading(nodes), leading(cpus), leading(memory) / 1024, gpus
        )
        if (seen := found.get(this.name)) is not None:  # another kind of node: the largest of each counts
            this = replace(
                this,
                nodes=seen.nodes + this.nodes,
                cpus=max(seen.cpus, this.cpus),
                memory_gb=max(seen.memory_gb, this.memory_gb),
                gpus=max(seen.gpus, this.gpus),
            )
        found[this.name] = this
    return sorted(found.values(), key=lambda partition: not partition.default)


def leading(text: str) -> int:
    """The whole number ``text`` starts with (sinfo writes "64+" where nodes differ): 0 where none."""
    digits = re.match(r"\d+", text)
    return int(digits.group()) if digits else 0
