"""Slurm without a cluster: the messages where none answers, and how the tasks of a job step and a
requeued job find their run folder (read from the variables Slurm sets, here set by the test). The
runs on a real cluster are in test_slurm.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from brain_mri.cluster import partitions, slurm_job
from brain_mri.config.slurm import first_task_folder, is_requeued_run, remember_folder, requeued_folder
from brain_mri.errors import BrainMRIError
from helpers import compose_task


def in_slurm_job(monkeypatch, task: int = 0, restarts: int = 0, nodes: int = 1) -> None:
    for name, value in {
        "SLURM_JOB_ID": "41",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(task),
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": str(nodes),
    }.items():
        monkeypatch.setenv(name, value)
    if restarts:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))
    else:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)


def test_where_no_slurm_answers_the_message_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        BrainMRIError, match=r"no Slurm answers here.*local-cluster\.sh up.*sinfo is not installed"
    ):
        partitions()
    (tmp_path / "sinfo").write_text(
        "#!/bin/sh\necho 'sinfo: error: Unable to contact slurm controller' >&2\nexit 1\n"
    )
    (tmp_path / "sinfo").chmod(0o755)
    with pytest.raises(BrainMRIError, match=r"no Slurm answers here.*Unable to contact slurm controller"):
        partitions()


def test_each_partition_is_read_with_its_largest_node_and_the_default_first(monkeypatch, tmp_path):
    answer = "cpu|4|64|257000|(null)\ngpu*|2|32|515000|gpu:a100:4(S:0-1)\ngpu*|1|128|1030000|gpu:8\n"
    (tmp_path / "sinfo").write_text(f"#!/bin/sh\nprintf '{answer}'\n")
    (tmp_path / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    gpu, cpu = partitions()
    assert (gpu.name, gpu.default, gpu.nodes, gpu.cpus, gpu.gpus) == ("gpu", True, 3, 128, 8)
    assert (cpu.name, cpu.default, cpu.nodes, cpu.cpus, cpu.gpus) == ("cpu", False, 4, 64, 0)
    assert gpu.memory_gb == pytest.approx(1030000 / 1024) and cpu.memory_gb == pytest.approx(257000 / 1024)


def test_a_time_limit_that_is_not_minutes_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigCompositionException) as error:
        compose_task("train", tmp_path, "hydra/launcher=slurm", "hydra.launcher.timeout_min=02:00:00")
    assert "hydra.launcher.timeout_min" in str(error.value) + str(error.value.__cause__)


def test_the_tasks_of_a_step_share_the_first_tasks_folder_and_a_requeue_returns_to_it(monkeypatch, tmp_path):
    config = OmegaConf.create({"paths": {"log_dir": str(tmp_path)}})
    run = tmp_path / "runs" / "2026-01-01_00-00-00"
    run.mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["train.py", "model=vgg11"])
    in_slurm_job(monkeypatch, task=0)
    first = slurm_job()
    assert first is not None and requeued_folder(config, first) is None  # a first start claims anew
    remember_folder(config, first, run)

    in_slurm_job(monkeypatch, task=1)
    assert first_task_folder(config, slurm_job()) == run  # type: ignore[arg-type]

    in_slurm_job(monkeypatch, task=0, restarts=1)
    again = slurm_job()
    assert again is not None and requeued_folder(config, again) == run
    assert not is_requeued_run(run)  # stopped before its first epoch ended: it starts again there
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert is_requeued_run(run)
    remember_folder(config, again, run)
    assert requeued_folder(config, again) is None  # recorded for this start: the other tasks' folder
    in_slurm_job(monkeypatch, task=1, restarts=1)
    assert first_task_folder(config, slurm_job()) == run  # type: ignore[arg-type]

    monkeypatch.setattr(sys, "argv", ["train.py", "model=resnet18"])  # another command in the same step
    assert requeued_folder(config, slurm_job()) is None  # type: ignore[arg-type]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert slurm_job() is None and not is_requeued_run(Path(run))
