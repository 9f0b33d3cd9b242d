"""Export: ONNX and TorchScript files that compute what the checkpoint's model computes, written where the
user asks or into the task's own output folder."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.files import read_json
from brain_mri.tasks.export import export, export_checkpoint, export_name
from helpers import PROJECT_ROOT, compose_task, run_script


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return read_json(trained_run / "metrics.json")["best_checkpoint"]


def test_onnx_runtime_gives_the_models_probabilities_for_any_batch_size(checkpoint, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = export_checkpoint(checkpoint, "onnx", tmp_path / "model.onnx")
    model = BrainMRIClassifier.load_from_checkpoint(checkpoint).eval()
    images = torch.rand(5, 3, 32, 32)  # the export traced a batch of 2
    with torch.no_grad():
        expected = model(images).softmax(dim=1).numpy()
    session = onnxruntime.InferenceSession(str(path))
    logits = session.run(None, {"images": images.numpy()})[0]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert probabilities.shape == (5, 2) and np.abs(probabilities - expected).max() < 1e-4
    contract = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert contract["class_names"] == ["no", "yes"] and contract["image_size"] == 32


def test_torchscript_gives_the_models_logits(checkpoint, tmp_path):
    path = export_checkpoint(checkpoint, "torchscript", tmp_path / "model.pt")
    files = {"contract.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    images = torch.rand(3, 3, 32, 32)
    model = BrainMRIClassifier.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    assert json.loads(files["contract.json"])["class_names"] == ["no", "yes"]


def test_the_task_writes_a_run_folders_best_checkpoint_into_its_own_folder_named_after_the_run(
    trained_run, checkpoint, tmp_path, monkeypatch
):
    started_in = tmp_path / "started_in"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    output_dir = tmp_path / "exports" / "2026-01-01_00-00-00"
    written = export(compose_task("export", output_dir, f"ckpt_path={trained_run}", "format=torchscript"))
    assert written == output_dir / f"{trained_run.name}_{Path(checkpoint).stem}.pt"
    assert torch.jit.load(str(written))(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    assert not list(started_in.iterdir()) and not list((trained_run / "checkpoints").glob("*.pt"))


def test_the_task_writes_output_where_asked_or_says_why_not(trained_run, tmp_path):
    asked = tmp_path / "served" / "classifier.pt"
    overrides = (f"ckpt_path={trained_run}", "format=torchscript")
    assert export(compose_task("export", tmp_path / "out", *overrides, f"output={asked}")) == asked
    assert asked.is_file() and not (tmp_path / "out").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BrainMRIError, match="Cannot write"):
        export(compose_task("export", tmp_path / "out", *overrides, f"output={tmp_path / 'a-file' / 'm.pt'}"))


def test_exports_are_named_after_the_run_and_a_sweeps_job_after_the_sweep_too():
    assert export_name(Path("/o/runs/2026-01-01_10-00-00/checkpoints/last.ckpt"), "onnx") == (
        "2026-01-01_10-00-00_last.onnx"
    )
    assert (
        export_name(Path("/o/cv/modern/3/checkpoints/epoch009.ckpt"), "torchscript") == "modern_3_epoch009.pt"
    )
    assert export_name(Path("/somewhere/model.ckpt"), "onnx") == "model.onnx"


def test_the_task_and_the_function_refuse_what_they_cannot_do(checkpoint, tmp_path):
    with pytest.raises(BrainMRIError, match="format must be one of onnx, torchscript"):
        export_checkpoint(checkpoint, "tflite", tmp_path / "model.tflite")
    cfg = compose_task("export", tmp_path / "out", f"ckpt_path={tmp_path / 'missing.ckpt'}", "format=tflite")
    with pytest.raises(BrainMRIError) as refused:
        export(cfg)
    assert "format must be one of" in str(refused.value) and "No checkpoint file" in str(refused.value)


def test_what_a_format_cannot_express_is_one_message_with_a_way_out(checkpoint, tmp_path, monkeypatch, capfd):
    """As the ONNX exporter refuses VGG-11's pooling at 100 px: a long message, and the graph printed
    from C++ to the process's standard output."""

    def refuse(*args, **kwargs):
        os.write(1, b"Torch IR graph at exception: graph(...)\n")
        raise RuntimeError(
            "Unsupported: ONNX export of operator adaptive_avg_pool2d. Please feel free to request support "
            "or submit a pull request on PyTorch GitHub: https://github.com/pytorch/pytorch/issues "
            "[Caused by %117]\n%1 = ..."
        )

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(BrainMRIError) as refused:
        export_checkpoint(checkpoint, "onnx", tmp_path / "model.onnx")
    message = str(refused.value)
    expected = (
        "cannot be exported as onnx at 32 px: Unsupported: ONNX export of operator adaptive_avg_pool2d."
    )
    assert expected in message and "format=torchscript exports" in message
    assert "Caused by" not in message and "Please feel free" not in message and "\n" not in message
    assert "Torch IR graph" not in capfd.readouterr().out


@pytest.mark.slow
def test_the_script_stops_before_hydra_writes_its_folder(tmp_path):
    folder = tmp_path / "export"
    result = run_script("export.py", "format=tflite", f"hydra.run.dir={folder}")
    assert result.returncode == 1 and "Error: export.py needs ckpt_path=<...>" in result.stderr
    assert "Traceback" not in result.stderr and not folder.exists()


@pytest.mark.skipif(shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists(), reason="not a clone")
def test_exported_models_are_ignored_by_git_wherever_written():
    for path in ("model.onnx", "served/model.pt", "outputs/exports/2026-01-01_00-00-00/run_last.onnx"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=PROJECT_ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored"
