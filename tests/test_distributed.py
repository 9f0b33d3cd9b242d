"""DDP on CPU with two processes (gloo): whole-set metrics, rank-zero files, and DDP inside a sweep."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from brain_mri.hardware import best_precision
from brain_mri.runs.files import read_csv, read_json
from brain_mri.runs.resume import is_being_trained
from brain_mri.tasks.evaluate import evaluate
from helpers import FAST_TRAINING, PROJECT_ROOT, check, compose_task, run_script

DDP = [*FAST_TRAINING, "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1"]


@pytest.mark.slow
def test_ddp_metrics_equal_a_single_process_evaluation(phantom_root, tmp_path):
    run = tmp_path / "ddp"
    check(run_script("train.py", *DDP, "trainer=ddp", f"data.root={phantom_root}", f"hydra.run.dir={run}"))
    metrics = read_json(run / "metrics.json")
    evaluate(compose_task("eval", tmp_path / "eval", f"ckpt_path={metrics['best_checkpoint']}"))  # 1 process
    single = read_json(tmp_path / "eval" / "metrics.json")
    for name in ("loss", "accuracy", "auroc", "sensitivity", "specificity", "f1", "cohen_kappa"):
        assert metrics[f"test/{name}"] == pytest.approx(single[f"test/{name}"], abs=1e-5), name
    ddp, one = (read_csv(folder / "predictions.csv") for folder in (run, tmp_path / "eval"))
    assert [r["path"] for r in ddp] == [r["path"] for r in one]
    assert [float(r["prob_yes"]) for r in ddp] == pytest.approx([float(r["prob_yes"]) for r in one], abs=1e-6)
    written = sorted(p.name for p in run.iterdir())
    assert "split.csv" in written and not [name for name in written if name.startswith(".pl_hydra")]
    assert [name for name in written if name.endswith(".log")] == ["train.log"]  # not train_ddp_process_1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_on_two_machines_only_the_first_process_writes_a_run_folder(phantom_root, tmp_path):
    """Two processes launched as the two nodes of trainer.num_nodes=2, each with its own run folder (as on
    two machines): the second node's process, local rank 0, must not take itself for rank zero."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    two_nodes = ["trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2", f"data.root={phantom_root}"]
    nodes = [
        subprocess.Popen(
            [sys.executable, "train.py", *DDP, *two_nodes, f"hydra.run.dir={tmp_path / f'node{rank}'}"],
            cwd=PROJECT_ROOT,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        assert node.wait(timeout=300) == 0, node.stderr.read()[-3000:]
    first, second = (sorted(p.name for p in (tmp_path / f"node{rank}").iterdir()) for rank in (0, 1))
    assert {"split.csv", "config.yaml", "run_info.json", "metrics.json", "checkpoints"} <= set(first)
    assert second == [".hydra", "train.log"]  # only what Hydra writes before the task starts


@pytest.mark.slow
def test_ddp_spawn_runs_inside_a_multirun(phantom_root, tmp_path):
    check(
        run_script(
            "train.py",
            "-m",
            *DDP,
            "trainer=ddp_spawn",
            f"data.root={phantom_root}",
            "model.lr=1e-3",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    job = tmp_path / "0"
    metrics = read_json(job / "metrics.json")
    assert metrics["status"] == "completed" and metrics["epochs_trained"] == 1  # counted by the workers
    assert "Testing in this process on one device" in (job / "train.log").read_text()
    assert (job / "val_predictions.csv").is_file()
    # the run folder was written when the workers' fit began, not again when this process tested
    assert (job / "run_info.json").stat().st_mtime_ns < (job / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert not is_being_trained(job)  # released by the worker that trained


def test_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert best_precision("gpu") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert best_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert best_precision("cpu") == "32-true"
