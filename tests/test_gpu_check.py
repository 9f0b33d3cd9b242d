"""scripts/gpu-check.sh, which measures a lent GPU, run on the CPU in its tiny form (GPU_CHECK_DEVICE=cpu):
every step runs and the one JSON line holds what it measured. Run apart: python -m pytest -m gpu_check."""

import json
import os
import subprocess

import pytest

from helpers import PROJECT_ROOT

pytestmark = pytest.mark.gpu_check


def gpu_check(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["scripts/gpu-check.sh"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "GPU_CHECK_OUT": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    result = gpu_check(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 1 and result.stderr.strip() == (
        "gpu-check: PyTorch sees no CUDA GPU here (GPU_CHECK_DEVICE=cpu checks the script)."
    )


def test_every_step_runs_and_one_json_line_reports_them(tmp_path):
    result = gpu_check(tmp_path, GPU_CHECK_DEVICE="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout[-3000:]
    report = json.loads(lines[0])
    assert report["device"] == "cpu" and report["bench"]["pipeline_over_bare"] > 0
    assert 0 <= report["cv"]["oof_auroc"] <= 1 and 0 <= report["ensemble_flip"]["test/auroc"] <= 1
    assert report["predict_explain"]["images"] > 0 and report["onnx_export"]["megabytes"] > 0
    folder = PROJECT_ROOT / report["folder"]
    assert sorted(p.name for p in (folder / "cv").iterdir() if p.name.isdigit()) == ["0", "1"]
    assert (
        len(list((folder / "predict" / "explanations").rglob("*.png"))) == report["predict_explain"]["images"]
    )
