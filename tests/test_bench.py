"""The benchmark times what it says (its speed targets are measured by hand, not here)."""

import pytest
import torch

from brain_mri.bench import autocast, main


def test_every_timed_window_covers_exactly_the_requested_images(phantom_root):
    steps, batch = 2, 4
    sizes = ["--image-size", "32", "--batch-size", str(batch), "--steps", str(steps), "--warmup", "1"]
    result = main([*sizes, "--data-root", str(phantom_root), "--precision", "32-true", "--ensemble", "2"])
    timed = steps * batch
    assert result["timed_images"] == {"pipeline": timed, "predict": timed, "ensemble": timed}
    assert result["ensemble_2_tta_flip_predict_img_s"] > 0


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)]
)
def test_the_loops_without_a_trainer_use_the_same_mixed_precision(precision, dtype):
    with autocast(precision, "cpu"):
        assert torch.nn.functional.linear(torch.rand(2, 8), torch.rand(3, 8)).dtype == dtype
    with autocast("32-true", "cpu"):
        assert torch.nn.functional.linear(torch.rand(2, 8), torch.rand(3, 8)).dtype == torch.float32


def test_the_data_benchmark_generates_distinct_phantoms_and_times_a_start(tmp_path):
    from brain_mri.bench_data import generate, start

    folder = generate(tmp_path / "images", 24, size=64)
    assert sorted(len(list((folder / name).glob("*.png"))) for name in ("no", "yes")) == [12, 12]
    assert generate(folder, 24, size=64) == folder  # kept: not written again
    result = start(str(folder), str(tmp_path / "cache"), 32)
    assert result["images"] == 24 and result["groups"] == 24 and result["largest_group"] == 1
    assert list((tmp_path / "cache").rglob("*.npy"))  # the decoded set was written


@pytest.mark.parametrize("arguments", [["--images", "0"], ["--folder", "a-file"]])
def test_the_data_benchmark_refuses_bad_arguments_in_one_line(tmp_path, monkeypatch, capsys, arguments):
    from brain_mri.bench_data import main as bench_data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exited:
        bench_data([*arguments, "--skip-memory"])
    assert exited.value.code == 2 and "Traceback" not in capsys.readouterr().err
