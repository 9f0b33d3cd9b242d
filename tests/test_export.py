"""Export: ONNX and TorchScript files that compute what the checkpoint's model computes."""

import json

import numpy as np
import pytest
import torch

from brain_mri.errors import BrainMRIError
from brain_mri.export import export, main
from brain_mri.models import BrainMRIClassifier
from brain_mri.run_outputs import read_json


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return read_json(trained_run / "metrics.json")["best_checkpoint"]


def test_onnx_runtime_gives_the_models_probabilities_for_any_batch_size(checkpoint, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = export(checkpoint, "onnx", tmp_path / "model.onnx")
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
    path = export(checkpoint, "torchscript", tmp_path / "model.pt")
    files = {"contract.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    images = torch.rand(3, 3, 32, 32)
    model = BrainMRIClassifier.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    assert json.loads(files["contract.json"])["class_names"] == ["no", "yes"]


def test_export_refuses_what_it_cannot_do(checkpoint, tmp_path, capsys):
    with pytest.raises(BrainMRIError, match="format must be one of onnx, torchscript"):
        export(checkpoint, "tflite")
    with pytest.raises(SystemExit) as stopped:
        main([f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    assert stopped.value.code == 1 and "Error: " in capsys.readouterr().err


def test_export_takes_a_run_folder_and_writes_where_asked_or_says_why_not(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = export(trained_run, "torchscript")  # the run's best checkpoint, named after it, here
    assert written.resolve().parent == tmp_path.resolve() and written.suffix == ".pt"
    assert not list((trained_run / "checkpoints").glob("*.pt"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BrainMRIError, match="Cannot write"):
        export(trained_run, "torchscript", tmp_path / "a-file" / "model.pt")
