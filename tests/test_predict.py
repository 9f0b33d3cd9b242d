"""predict.py: a checkpoint (or ensemble) asked about new files, no labels needed."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.inference import predict_files
from brain_mri.runs.files import read_csv, read_json
from brain_mri.tasks.predict import input_files, predict
from helpers import compose_task


@pytest.fixture
def new_scans(trained_run, phantom_root, tmp_path):
    """The run's test images, in nested folders under other names, plus a file that is not an image."""
    folder = tmp_path / "scans"
    for i, row in enumerate(r for r in read_csv(trained_run / "split.csv") if r["partition"] == "test"):
        target = folder / f"patient{i % 3}" / f"slice{i}{(phantom_root / row['path']).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantom_root / row["path"], target)
    (folder / "patient0" / "notes.jpg").write_text("not an image")
    return folder


def test_predictions_of_new_files_equal_the_runs_own(trained_run, phantom_root, new_scans, tmp_path):
    checkpoint = read_json(trained_run / "metrics.json")["best_checkpoint"]
    predict(compose_task("predict", tmp_path / "out", f"ckpt_path={checkpoint}", f"input={new_scans}"))
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == ["path", "prob_no", "prob_yes", "predicted", "predicted_class"]  # no labels
    test = [r for r in read_csv(trained_run / "split.csv") if r["partition"] == "test"]
    by_content = {(phantom_root / r["path"]).read_bytes(): r["path"] for r in test}
    expected = {r["path"]: float(r["prob_yes"]) for r in read_csv(trained_run / "predictions.csv")}
    assert len(rows) == len(test)
    for row in rows:
        original = by_content[Path(row["path"]).read_bytes()]
        assert float(row["prob_yes"]) == pytest.approx(expected[original], abs=1e-5)
    bad = read_csv(tmp_path / "out" / "bad_images.csv")
    assert [b["path"] for b in bad] == [str(new_scans / "patient0" / "notes.jpg")]
    assert "not an image" in bad[0]["reason"]


def test_the_python_function_streams_in_chunks(trained_run, new_scans):
    model = BrainMRIClassifier.load_from_checkpoint(
        read_json(trained_run / "metrics.json")["best_checkpoint"]
    )
    bad = []
    files = input_files(new_scans)
    results = list(predict_files(model, files, batch_size=2, chunk_size=3, bad=bad, progress=False))
    assert len(results) == len(files) - 1 and len(bad) == 1
    assert all(abs(r.probabilities.sum() - 1) < 1e-5 and r.spread is None for r in results)
    assert all(r.heat_map is None and r.pixels.shape == (32, 32) for r in results)  # explain=False


def test_images_smaller_than_training_allows_are_listed_as_bad(trained_run, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    Image.new("L", (16, 40), 128).save(scans / "thin.png")
    Image.new("L", (40, 40), 128).save(scans / "fine.png")
    predict(compose_task("predict", tmp_path / "out", f"ckpt_path={trained_run}", f"input={scans}"))
    assert [Path(r["path"]).name for r in read_csv(tmp_path / "out" / "predictions.csv")] == ["fine.png"]
    bad = read_csv(tmp_path / "out" / "bad_images.csv")
    assert bad == [{"path": str(scans / "thin.png"), "reason": "too small: 16x40 pixels (min_image_size=32)"}]


def test_an_ensemble_with_flip_writes_the_spread(small_sweep, new_scans, tmp_path):
    predict(compose_task("predict", tmp_path, f"ckpt_path={small_sweep}", f"input={new_scans}", "tta=flip"))
    rows = read_csv(tmp_path / "predictions.csv")
    assert "spread" in rows[0] and max(float(r["spread"]) for r in rows) > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("input=/no/such/folder", "no such file or folder"),
        ("tta=rotate", "tta must be one of"),
        ("batch_size=0", "at least 1"),
        ("explain=maybe", "explain must be true, false or an explanation method"),
        ("cam_layer=layer4", "add explain=true"),
        ("device=tpu", "device must be cpu, cuda or auto, got 'tpu'"),
        ("device=cuda", "device=cuda, but PyTorch sees no CUDA GPU here"),
    ],
)
def test_bad_settings_are_one_message(trained_run, new_scans, tmp_path, override, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    overrides = [f"ckpt_path={trained_run}", f"input={new_scans}", override]
    with pytest.raises(BrainMRIError, match=message):
        predict(compose_task("predict", tmp_path, *overrides))


def test_folders_are_read_through_links_and_hidden_parents(trained_run, new_scans, tmp_path):
    inside_hidden = tmp_path / ".hidden" / "input"
    inside_hidden.mkdir(parents=True)
    (inside_hidden / "linked").symlink_to(new_scans, target_is_directory=True)  # a linked folder
    (inside_hidden / "loop").symlink_to(inside_hidden, target_is_directory=True)  # read once, not forever
    (inside_hidden / ".cache").mkdir()
    (inside_hidden / ".cache" / "x.png").write_bytes(b"")
    found = input_files(inside_hidden, exclude=None)
    assert len(found) == len(input_files(new_scans)) and all("/linked/" in str(p) for p in found)


def test_the_tasks_own_output_folder_is_not_read_back(trained_run, new_scans, tmp_path):
    output = new_scans / "predictions"
    checkpoint = read_json(trained_run / "metrics.json")["best_checkpoint"]
    for _ in range(2):  # a second run would find the first one's files
        predict(compose_task("predict", output, f"ckpt_path={checkpoint}", f"input={new_scans}"))
    assert [b["path"] for b in read_csv(output / "bad_images.csv")] == [
        str(new_scans / "patient0" / "notes.jpg")
    ]


def test_a_folder_of_unreadable_files_leaves_no_predictions(trained_run, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_text("text")
    with pytest.raises(BrainMRIError, match="None of the 1 file"):
        predict(compose_task("predict", tmp_path / "out", f"ckpt_path={trained_run}", f"input={junk}"))
    assert not (tmp_path / "out" / "predictions.csv").exists()
    assert read_csv(tmp_path / "out" / "bad_images.csv")[0]["path"] == str(junk / "a.png")


def test_missing_arguments_are_one_message(trained_run, tmp_path):
    with pytest.raises(BrainMRIError, match=r"predict\.py needs input="):
        predict(compose_task("predict", tmp_path, f"ckpt_path={trained_run}"))


def test_sigterm_while_predicting_is_said_and_leaves_no_partial_file(
    trained_run, new_scans, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    from brain_mri.config.launch import run_task
    from brain_mri.runs.files import CsvAppender

    written = CsvAppender.write

    def stopped_after_the_first_row(self, row):
        written(self, row)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler would, mid-way

    monkeypatch.setattr(CsvAppender, "write", stopped_after_the_first_row)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        run_task(predict, compose_task("predict", out, f"ckpt_path={trained_run}", f"input={new_scans}"))
    assert exited.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == f"Interrupted by SIGTERM (its state is in {out})."
    assert not (out / "predictions.csv").exists() and not [p for p in out.rglob(".*") if "tmp" in p.name]


def test_a_broken_link_among_the_inputs_is_listed_not_dropped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scan.png").write_bytes(b"")
    (tmp_path / "in" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert [p.name for p in input_files(tmp_path / "in")] == ["gone.png", "scan.png"]  # read, and said why
