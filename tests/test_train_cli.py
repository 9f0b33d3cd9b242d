"""End to end on phantoms: the tasks in this process; the real scripts where a process is the point."""

import io
import json
import logging
import re
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from brain_mri.config.launch import run_task, set_aside_unstarted
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import read_csv
from brain_mri.tasks.evaluate import evaluate
from brain_mri.tasks.train import train
from brain_mri.training.callbacks import EpochSummary
from helpers import FAST_TRAINING, check, compose_task, run_script

TEST_METRICS = ("accuracy", "auroc", "sensitivity", "specificity", "f1", "cohen_kappa", "loss")


def test_run_folder_is_complete_and_consistent(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {f"test/{m}" for m in TEST_METRICS} | {"val/loss_best", "best_epoch", "best_checkpoint"} <= set(
        metrics
    )
    best = trained_run / "checkpoints" / metrics["best_checkpoint"].split("/")[-1]
    assert best.is_file() and (trained_run / "checkpoints" / "last.ckpt").is_file()

    logged = read_csv(trained_run / "csv" / "metrics.csv")
    val_losses = [float(r["val/loss"]) for r in logged if r["val/loss"]]
    assert len(val_losses) == 2 and metrics["val/loss_best"] == pytest.approx(min(val_losses))
    assert metrics["best_epoch"] == val_losses.index(min(val_losses))
    assert any(r["train/loss"] for r in logged) and any(r["val/auroc"] for r in logged)

    split = read_csv(trained_run / "split.csv")
    predictions = read_csv(trained_run / "predictions.csv")
    assert [p["path"] for p in predictions] == [r["path"] for r in split if r["partition"] == "test"]
    probability = torch.tensor([float(p["prob_yes"]) for p in predictions])
    label = torch.tensor([int(p["label"]) for p in predictions])
    assert [int(p["predicted"]) for p in predictions] == (probability > 0.5).int().tolist()
    assert all(float(p["prob_no"]) + float(p["prob_yes"]) == pytest.approx(1.0) for p in predictions)
    assert [p["class"] for p in predictions] == [["no", "yes"][int(p["label"])] for p in predictions]
    assert metrics["test/accuracy"] == pytest.approx(binary_accuracy(probability, label).item())
    assert metrics["test/auroc"] == pytest.approx(binary_auroc(probability, label).item())

    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss", "val/auroc", "val/loss_best", "test/auroc"} <= set(
        events.Tags()["scalars"]
    )
    hparams = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {"val/loss_best", "test/auroc", "test/sensitivity"} <= {
        m.name.tag for m in experiment.metric_infos
    }
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["model/arch"].string_value == "resnet18"


def test_every_tensorboard_scalar_keeps_its_points_in_step_order(trained_run):
    """TensorBoard drops a tag's earlier points when its step goes backwards: the hyperparameter record
    must not log the results again at step 0."""
    logged = read_csv(trained_run / "csv" / "metrics.csv")
    epochs = len([r for r in logged if r["val/loss"]])
    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for tag, tag_steps in steps.items():
        assert tag_steps == sorted(tag_steps), tag
    assert len(steps["val/loss_best"]) == epochs == 2 and steps["val/loss_best"] == steps["val/loss"]
    best = [e.value for e in events.Scalars("val/loss_best")]
    assert best == pytest.approx([float(r["val/loss_best"]) for r in logged if r["val/loss_best"]])
    for name in TEST_METRICS:
        assert steps[f"test/{name}"] == [max(steps["train/loss"]) + 1], name  # once, after the last step


def test_tensorboard_shows_the_images_the_model_saw_and_its_test_mistakes(trained_run):
    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"train/first_batch", "val/examples", "test/confusion_matrix"} <= images
    assert [e.step for e in events.Images("val/examples")] == [0, 1]  # every 5th epoch and the last
    predictions = read_csv(trained_run / "predictions.csv")
    mistakes = sum(p["predicted_class"] != p["class"] for p in predictions)
    assert ("test/misclassified" in images) == (mistakes > 0)
    if mistakes:  # each mistake under its Grad-CAM map: colour over the gray slices and black captions
        figure = Image.open(io.BytesIO(events.Images("test/misclassified")[0].encoded_image_string))
        pixels = np.asarray(figure.convert("RGB")).astype(int)
        assert np.abs(pixels[..., 0] - pixels[..., 2]).max() > 50  # gray and black have R = B
    assert set(events.PluginTagToContent("pr_curves")) == {"test/pr_curve/no", "test/pr_curve/yes"}


def test_the_run_draws_its_test_images_under_grad_cam_misclassified_first(trained_run):
    predictions = read_csv(trained_run / "predictions.csv")
    drawn = read_csv(trained_run / "gallery.csv")
    assert sorted(r["path"] for r in drawn) == sorted(r["path"] for r in predictions)  # fewer than 64
    wrong = [r["predicted_class"] != r["class"] for r in drawn]
    assert wrong == sorted(wrong, reverse=True)  # misclassified first
    by_path = {r["path"]: r for r in predictions}
    for row in drawn:
        assert row["predicted_class"] == by_path[row["path"]]["predicted_class"]
        picture = np.asarray(Image.open(trained_run / row["image"]).convert("RGB")).astype(int)
        assert picture.shape[:2] == (256 + 24, 256)  # the overlay and its caption strip
        assert np.abs(picture[..., 0] - picture[..., 2]).max() > 50  # a map in colour over gray


def test_binary_metrics_take_yes_as_the_positive_class(trained_run):
    """Counted by hand from predictions.csv, with label 1 (yes, tumour) positive."""
    rows = read_csv(trained_run / "predictions.csv")
    pairs = [(int(r["label"]), int(r["predicted"])) for r in rows]
    tp, fn = pairs.count((1, 1)), pairs.count((1, 0))
    tn, fp = pairs.count((0, 0)), pairs.count((0, 1))
    n = len(pairs)
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    by_hand = {
        "test/sensitivity": tp / (tp + fn),
        "test/specificity": tn / (tn + fp),
        "test/f1": 2 * tp / (2 * tp + fp + fn),
        "test/cohen_kappa": (observed - expected) / (1 - expected) if expected < 1 else 0.0,
    }
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for name, value in by_hand.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_eval_reproduces_the_runs_test_metrics(trained_run, tmp_path):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    evaluate(compose_task("eval", tmp_path, f"ckpt_path={metrics['best_checkpoint']}"))
    again = json.loads((tmp_path / "metrics.json").read_text())
    for name in TEST_METRICS:
        assert again[f"test/{name}"] == pytest.approx(metrics[f"test/{name}"], abs=1e-6)
    assert (tmp_path / "predictions.csv").read_text() == (trained_run / "predictions.csv").read_text()


def test_eval_on_every_image_of_a_folder(trained_run, phantom_root, tmp_path):
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    evaluate(
        compose_task("eval", tmp_path, f"ckpt_path={checkpoint}", "eval.on=all", f"data.root={phantom_root}")
    )
    assert len(read_csv(tmp_path / "predictions.csv")) == 44


def test_multirun_jobs_share_one_split_and_the_decode_cache(small_sweep):
    jobs = [small_sweep / "0", small_sweep / "1"]  # the two jobs of the 2x2 grid with a valid batch size
    assert len({(job / "split.csv").read_text() for job in jobs}) == 1
    # the first job (or an earlier run) filled the decode cache
    assert "0 decoded, 44 from the cache" in (jobs[1] / "train.log").read_text()
    hparams = [(job / "csv" / "hparams.yaml").read_text() for job in jobs]
    assert "lr: 0.001" in hparams[0] and "lr: 0.0001" in hparams[1]


def test_missing_data_folder_is_one_clear_message_and_leaves_no_run_folder(tmp_path):
    run = tmp_path / "runs" / "2026-01-01_00-00-00"
    result = run_script(
        "train.py", f"data.root={tmp_path / 'absent'}", f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 1
    assert "Error: No data set at" in result.stderr and "data=synthetic" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    kept = tmp_path / "failed_starts" / "2026-01-01_00-00-00_train.log"
    assert f"The log: {kept}" in result.stderr and not run.exists()
    assert "Stopped: No data set at" in kept.read_text()  # the log says why


@pytest.mark.slow
def test_the_quick_start_prints_no_warning_and_a_line_per_epoch_when_not_on_a_terminal(
    phantom_root, tmp_path
):
    """stdout and stderr are files here, as in a batch job: no progress bar, but one line per epoch."""
    run = tmp_path / "run"
    result = check(
        run_script(
            "train.py",
            "data=synthetic",
            f"data.root={phantom_root}",
            "data.image_size=32",
            "trainer.max_epochs=2",
            f"hydra.run.dir={run}",
        )
    )
    noise = [
        line for line in result.stderr.splitlines() if re.search(r"warn|deprecat|\.py:\d+|tip:", line, re.I)
    ]
    assert noise == []
    for text in (result.stdout, (run / "train.log").read_text()):
        epochs = [line.split(" - ", 1)[1] for line in text.splitlines() if "[brain_mri.progress]" in line]
        assert [line.split(":")[0] for line in epochs] == ["Epoch 0 (1 of 2)", "Epoch 1 (2 of 2)"]
        assert all(
            re.search(r"train/loss [\d.]+, val/loss [\d.]+, val/auroc [\d.]+, [\d.]+ s$", e) for e in epochs
        )


def test_the_epoch_line_stays_off_a_terminal_where_the_progress_bar_is():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, file = logging.StreamHandler(Terminal()), logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(terminal)
    root.addHandler(file)
    summary = EpochSummary()
    try:
        summary.setup(None, None, "fit")  # type: ignore[arg-type]
        summary.progress.warning("Epoch 0 (1 of 1): train/loss 0.5")
        summary.teardown(None, None, "fit")  # type: ignore[arg-type]
    finally:
        root.removeHandler(terminal)
        root.removeHandler(file)
    assert terminal.stream.getvalue() == "" and "Epoch 0 (1 of 1)" in file.stream.getvalue()
    assert not terminal.filters


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.weights=imagenet"], "Downloading the ImageNet weights of resnet18"),  # offline here
        (["model.positive_class=maybe"], r"model\.positive_class=maybe is not one of the classes"),
    ],
)
def test_a_run_refused_after_hydra_made_its_folder_leaves_only_its_log(
    phantom_root, tmp_path, monkeypatch, capsys, overrides, message
):
    """As train.py leaves it: Hydra's .hydra/ and the log, which moves to failed_starts/."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet weights cached
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # and no way out
    monkeypatch.setattr(urllib.request, "_opener", None)
    run = tmp_path / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    handler = logging.FileHandler(run / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        cfg = compose_task(
            "train", run, *FAST_TRAINING, f"data.root={phantom_root}", f"paths.log_dir={tmp_path}", *overrides
        )
        with pytest.raises(SystemExit):
            run_task(train, cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert re.search(message, capsys.readouterr().err)
    assert not run.exists() and list((tmp_path / "runs").iterdir()) == []
    kept = (tmp_path / "failed_starts" / "2026-01-01_00-00-00_train.log").read_text()
    assert re.search(f"Stopped: {message}", kept)


def test_resume_of_a_folder_that_is_not_a_run_leaves_it_as_it_was(tmp_path):
    """Checked before Hydra writes its log into the folder: nothing is added to it, nothing removed."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("train.py", f"resume={empty}", f"paths.log_dir={tmp_path / 'logs'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert f"{empty} is not a run folder of this project (no config.yaml)." in result.stderr
    assert empty.is_dir() and not any(empty.iterdir()) and not (tmp_path / "logs").exists()


def test_a_resumed_run_that_is_refused_keeps_its_folder(trained_run, tmp_path):
    """Only a folder with nothing but Hydra's files and a log is set aside."""
    assert set_aside_unstarted(trained_run, tmp_path / "failed_starts") is None
    assert (trained_run / "metrics.json").is_file() and not (tmp_path / "failed_starts").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("absent.ckpt", "No checkpoint file"),
        ("split.csv", "not a PyTorch"),
        ("checkpoints", r"It holds epoch\d{3}-val_loss[\d.]+\.ckpt: pass that file, or the run folder"),
    ],
)
def test_eval_refuses_what_is_not_a_checkpoint(trained_run, tmp_path, name, message):
    with pytest.raises(BrainMRIError, match=message):
        evaluate(compose_task("eval", tmp_path, f"ckpt_path={trained_run / name}"))
