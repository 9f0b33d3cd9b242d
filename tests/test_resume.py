"""Interruptions and reproducibility: a killed run resumes to the same result; reruns repeat exactly."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata

import pytest
import torch

from brain_mri.checkpoints import AtomicCheckpointIO, load_checkpoint
from brain_mri.run_outputs import read_csv, read_json
from conftest import FAST_TRAINING, PROJECT_ROOT, check, run_script

DETERMINISTIC = [
    *FAST_TRAINING,
    "data.image_size=48",
    "data.batch_size=6",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "callbacks.early_stopping=null",
]
RESULTS = ("val/loss_best", "best_epoch", "epochs_trained", "test/loss", "test/auroc", "test/accuracy")


def val_losses(run):
    return [float(r["val/loss"]) for r in read_csv(run / "csv" / "metrics.csv") if r["val/loss"]]


@pytest.fixture(scope="module")
def uninterrupted(phantom_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole")
    check(run_script("train.py", *DETERMINISTIC, f"data.root={phantom_root}", f"hydra.run.dir={run}"))
    return run


def test_a_run_killed_mid_training_resumes_to_the_same_result(phantom_root, uninterrupted, tmp_path):
    run = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "train.py", *DETERMINISTIC, f"data.root={phantom_root}", f"hydra.run.dir={run}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # somewhere in the second epoch: no chance to clean up
    process.wait()
    assert not (run / "metrics.json").exists(), "the run ended before it could be killed"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] < 3

    check(run_script("train.py", f"resume={run}"))
    resumed, whole = read_json(run / "metrics.json"), read_json(uninterrupted / "metrics.json")
    for name in RESULTS:
        assert resumed[name] == pytest.approx(whole[name], abs=1e-6), name
    assert val_losses(run) == pytest.approx(val_losses(uninterrupted), abs=1e-6)  # every epoch, logged once
    assert (run / "predictions.csv").read_text() == (uninterrupted / "predictions.csv").read_text()


def test_same_config_and_seed_repeat_exactly(phantom_root, uninterrupted, tmp_path):
    check(run_script("train.py", *DETERMINISTIC, f"data.root={phantom_root}", f"hydra.run.dir={tmp_path}"))
    assert (tmp_path / "split.csv").read_bytes() == (uninterrupted / "split.csv").read_bytes()
    again, first = read_json(tmp_path / "metrics.json"), read_json(uninterrupted / "metrics.json")
    assert {k: again[k] for k in RESULTS} == {k: first[k] for k in RESULTS}


def test_run_folder_records_what_is_needed_to_repeat_it(uninterrupted, phantom_root):
    info = read_json(uninterrupted / "run_info.json")
    assert info["packages"]["torch"] == metadata.version("torch")
    assert info["packages"]["lightning"] == metadata.version("lightning")
    assert re.fullmatch("[0-9a-f]{40}", info["git_commit"]) and isinstance(info["git_dirty"], bool)
    assert "train.py" in info["command"] and info["data_root"] == str(phantom_root)
    hashes = "\n".join(
        f"{r['path']}\t{r['sha256']}"
        for r in sorted(read_csv(uninterrupted / "split.csv"), key=lambda r: r["path"])
    )
    assert (
        info["data_fingerprint"] == hashlib.sha256(hashes.encode()).hexdigest() and info["data_images"] == 44
    )
    config = (uninterrupted / "config.yaml").read_text()
    assert "${" not in config and "deterministic: true" in config


def test_resume_needs_a_finished_epoch(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    result = run_script("train.py", f"resume={tmp_path}")
    assert result.returncode == 1 and "no checkpoints/last.ckpt" in result.stderr


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, target)

    def crash_midway(checkpoint, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if the process died while writing

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_eval_refuses_a_split_whose_images_changed(trained_run, phantom_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    test_files = [r["path"] for r in read_csv(trained_run / "split.csv") if r["partition"] == "test"]
    (data / test_files[0]).write_bytes((data / test_files[1]).read_bytes())  # edited
    (data / test_files[1]).unlink()  # removed
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    result = run_script(
        "eval.py", f"ckpt_path={checkpoint}", f"data.root={data}", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert result.returncode == 1 and "no longer match" in result.stderr
    assert "1 missing, 1 changed" in result.stderr and test_files[0] in result.stderr
