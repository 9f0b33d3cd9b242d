"""On a real Slurm cluster (scripts/slurm/local-cluster.sh up, as .ci/run starts it): sweeps through sbatch,
an Optuna search, DDP under srun, and jobs that Slurm stops and requeues. Run with
``python -m pytest -m slurm``; skipped where no Slurm answers, failed in CI (``CI=true``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from brain_mri.cluster import partitions
from brain_mri.errors import BrainMRIError
from brain_mri.report.build import build_report
from brain_mri.runs.files import read_csv, read_json
from helpers import FAST_TRAINING, PROJECT_ROOT, check, run_script

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
TEST_METRICS = ("loss", "accuracy", "auroc", "sensitivity", "specificity", "cohen_kappa")


@pytest.fixture(scope="session")
def slurm_cluster() -> list[str]:
    try:
        return partitions()
    except BrainMRIError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the Slurm tests on a local cluster, but {err}")
        pytest.skip(str(err))


def job_env() -> dict[str, str]:
    """What a job needs: this Python first on the PATH, the tests' callbacks importable."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(PROJECT_ROOT / "tests"),
        "PYTHONUNBUFFERED": "1",
    }


def submit(output: Path, *arguments: str) -> str:
    """sbatch from the project root; returns the job's ID."""
    submitted = subprocess.run(
        ["sbatch", "--parsable", f"--output={output}", f"--chdir={PROJECT_ROOT}", *arguments],
        capture_output=True,
        text=True,
        env=job_env(),
        check=True,
    )
    return submitted.stdout.strip().split(";")[0]


def wait_for(jobs: list[str], timeout: float = 240) -> None:
    started = time.monotonic()
    while subprocess.run(["squeue", "--noheader", "--jobs", ",".join(jobs)], capture_output=True).stdout:
        assert time.monotonic() - started < timeout, f"Slurm jobs {jobs} still queued or running"
        time.sleep(1)


def test_a_sweep_through_sbatch_reports_each_job_and_the_one_that_failed(phantom_root, tmp_path):
    result = check(
        run_script(
            "train.py",
            "-m",
            *ON_SLURM,
            *FAST_TRAINING,
            "trainer.max_epochs=1",
            f"data.root={phantom_root}",
            "data.batch_size=16,8,0",  # the last job fails
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    said = result.stdout + result.stderr
    assert "Bypassing sacct error" not in said and "1 of 3 jobs failed" in said
    assert len(list((tmp_path / ".submitit").glob("*_[0-2]"))) == 3  # one Slurm job (array task) each
    rows = {row["batch_size"]: row for row in build_report(tmp_path, resamples=50)["rows"]}
    assert {size: row["status"] for size, row in rows.items()} == {
        16: "completed",
        8: "completed",
        0: "failed",
    }
    assert "batch_size" in rows[0]["error"] and 0 <= rows[16]["test/accuracy"] <= 1


def test_an_optuna_search_over_slurm_receives_each_jobs_result(phantom_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    check(
        run_script(
            "train.py",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "model=resnet18",
            *ON_SLURM,
            *FAST_TRAINING,
            "trainer.max_epochs=1",
            f"data.root={phantom_root}",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    trials = [read_json(tmp_path / str(job) / "metrics.json") for job in (0, 1)]
    assert len(list((tmp_path / ".submitit").glob("*_[0-1]"))) == 2
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(trial["val/loss_best"] for trial in trials))


def test_ddp_under_srun_matches_ddp_spawn_and_writes_one_run_folder(phantom_root, tmp_path):
    ddp = [*FAST_TRAINING, "trainer.accelerator=cpu", "trainer.max_epochs=1", f"data.root={phantom_root}"]
    job = submit(
        tmp_path / "srun.out",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "scripts/slurm/train.sbatch",  # the example: srun python train.py trainer=ddp ...
        *ddp,
        f"paths.log_dir={tmp_path / 'srun'}",  # default folder names: the two tasks must agree on one
    )
    spawned = run_script(
        "train.py", *ddp, "trainer=ddp_spawn", "trainer.devices=2", f"hydra.run.dir={tmp_path}/spawn"
    )
    wait_for([job])
    check(spawned)
    (run,) = (tmp_path / "srun" / "runs").iterdir()
    said = (tmp_path / "srun.out").read_text()
    assert said.count("SLURM auto-requeueing enabled") >= 2, said[
        -3000:
    ]  # Lightning took both ranks from Slurm
    under_srun, under_spawn = read_json(run / "metrics.json"), read_json(tmp_path / "spawn" / "metrics.json")
    for name in TEST_METRICS:
        assert under_srun[f"test/{name}"] == pytest.approx(under_spawn[f"test/{name}"], abs=1e-5), name
    assert under_srun["val/loss_best"] == pytest.approx(under_spawn["val/loss_best"], abs=1e-5)
    written = sorted(path.name for path in run.iterdir())
    assert [name for name in written if name.endswith(".log") or name.startswith(".pl_hydra")] == [
        "train.log"
    ]
    assert {"split.csv", "config.yaml", "run_info.json", "checkpoints"} <= set(written)


def test_a_job_that_slurm_requeues_resumes_in_its_folder_to_the_same_result(phantom_root, tmp_path):
    """The same run twice under Slurm: once through, once stopped twice. First Slurm sends SIGUSR1 (its
    warning before a time limit; Lightning saves and requeues the job), then the job is requeued with
    ``scontrol requeue`` (SIGTERM, then a new start)."""
    run = [*FAST_TRAINING, "trainer.max_epochs=5", f"data.root={phantom_root}"]
    stops = [
        "+callbacks.usr1._target_=helpers.SlurmSignalAt",
        "+callbacks.usr1.epoch=1",
        "+callbacks.requeue._target_=helpers.SlurmSignalAt",
        "+callbacks.requeue.epoch=3",
        "+callbacks.requeue.start=1",
        "+callbacks.requeue.how=requeue",
    ]
    jobs = [
        submit(
            tmp_path / f"{name}.out",
            "--cpus-per-task=1",
            "scripts/slurm/train.sbatch",
            *run,
            *extra,
            f"paths.log_dir={tmp_path / name}",
        )
        for name, extra in (("through", []), ("stopped", stops))
    ]
    wait_for(jobs)
    (through,), (stopped,) = ((tmp_path / name / "runs").glob("*") for name in ("through", "stopped"))
    said = (tmp_path / "stopped.out").read_text()
    assert "Handling auto-requeue signal" in said and "Interrupted by SIGTERM" in said, said[-3000:]
    resumes = read_json(stopped / "run_info.json")["resumes"]
    assert [(r["slurm_requeue"]["restart"], r["first_epoch"]) for r in resumes] == [(1, 1), (2, 3)]
    assert not list(stopped.glob("hpc_ckpt_*.ckpt"))  # Lightning's mid-epoch save, not needed
    whole, resumed = read_json(through / "metrics.json"), read_json(stopped / "metrics.json")
    assert resumed["status"] == "completed" and resumed["epochs_trained"] == whole["epochs_trained"] == 5
    for name in TEST_METRICS:
        assert resumed[f"test/{name}"] == pytest.approx(whole[f"test/{name}"], abs=1e-6), name
    val_losses = [
        [float(r["val/loss"]) for r in read_csv(folder / "csv" / "metrics.csv") if r.get("val/loss")]
        for folder in (through, stopped)
    ]
    assert val_losses[1] == pytest.approx(val_losses[0], abs=1e-6) and len(val_losses[1]) == 5


def test_bad_cluster_settings_are_one_message_before_any_job_is_queued(phantom_root, tmp_path):
    sweep = tmp_path / "sweep"
    base = ["-m", *ON_SLURM, *FAST_TRAINING, f"data.root={phantom_root}", f"hydra.sweep.dir={sweep}"]
    cases = {
        "hydra.launcher.partition=nowhere": "partition=nowhere: this cluster has no such partition",
        "trainer.num_nodes=2": "trainer.num_nodes=2 but hydra.launcher.nodes=1",
        "hydra.launcher.timeout_min=0": "timeout_min must be the job's time limit in whole minutes",
        # what no node of the partition holds: the job would wait in the queue for ever
        "hydra.launcher.cpus_per_task=999": "cpus_per_task=999 (x tasks_per_node=1) asks for more than",
        "hydra.launcher.mem_gb=100000": "mem_gb=100000 asks for more than partition",
        "hydra.launcher.gpus_per_node=1": "gpus_per_node=1 asks for more than partition debug has (0 GPUs",
        "hydra.launcher.nodes=2": "nodes=2 asks for more than partition debug has (1 node)",
        "+hydra.launcher.partiton=debug": "hydra.launcher.partiton is not a setting of the Slurm launcher",
    }
    for setting, message in cases.items():
        result = run_script("train.py", *base, setting)
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and not sweep.exists()


def test_a_run_asking_for_more_nodes_than_its_job_holds_is_one_message(phantom_root, tmp_path):
    srun = subprocess.run(
        [
            "srun",
            "--ntasks=1",
            "--cpus-per-task=1",
            sys.executable,
            "train.py",
            *FAST_TRAINING,
            f"data.root={phantom_root}",
            "trainer=ddp",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=120,
    )
    assert srun.returncode != 0 and "trainer.num_nodes=2 but this Slurm job holds 1 node:" in srun.stderr
    assert "Traceback" not in srun.stderr


def test_a_sweep_job_that_reaches_its_time_limit_is_requeued_by_submitit_and_resumes(
    phantom_root, tmp_path, monkeypatch
):
    """Slurm's warning before the time limit (SIGUSR2, ``signal_delay_s`` before it) makes submitit
    requeue the job; its new start resumes in the job's folder and the sweep receives its result."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT / "tests"))  # the jobs import the test callback
    result = check(
        run_script(
            "train.py",
            "-m",
            *ON_SLURM,
            *FAST_TRAINING,
            "trainer.max_epochs=4",
            f"data.root={phantom_root}",
            "+callbacks.usr2._target_=helpers.SlurmSignalAt",
            "+callbacks.usr2.epoch=2",
            "+callbacks.usr2.how=USR2",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    job = tmp_path / "0"
    (resume,) = read_json(job / "run_info.json")["resumes"]
    assert resume["slurm_requeue"]["restart"] == 1 and resume["first_epoch"] == 2, result.stderr[-2000:]
    metrics = read_json(job / "metrics.json")
    assert metrics["status"] == "completed" and metrics["epochs_trained"] == 4
    assert "0 of 1 jobs failed" not in result.stderr and "jobs failed" not in result.stderr
