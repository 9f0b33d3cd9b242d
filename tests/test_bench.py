"""The benchmark runs and reports every figure (its speed targets are measured by hand, not here)."""

from brain_mri.bench import main


def test_benchmark_reports_every_variant(phantom_root, capsys):
    result = main(
        [
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--data-root",
            str(phantom_root),
            "--precision",
            "32-true",
        ]
    )
    for key in ("pipeline_img_s", "bare_loop_img_s", "study_style_img_s", "predict_img_s"):
        assert result[key] > 0, key
    assert abs(result["pipeline_over_bare"] - result["pipeline_img_s"] / result["bare_loop_img_s"]) < 0.01
    assert '"precision": "32-true"' in capsys.readouterr().out
