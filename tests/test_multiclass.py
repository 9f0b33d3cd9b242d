"""More than two classes, end to end: the classes come from the folders; training, evaluation,
predictions.csv and the report agree; binary metrics use an explicit, configurable positive class."""

import shutil
import warnings

import pytest
import torch

from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.models import BrainMRIClassifier
from brain_mri.report.build import main as report
from brain_mri.runs.files import read_csv, read_json
from brain_mri.tasks.evaluate import evaluate
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, compose_task

METRICS = ("accuracy", "sensitivity", "specificity", "auroc", "f1", "cohen_kappa")


@pytest.fixture(scope="module")
def three_class_run(phantom_root, tmp_path_factory):
    """Phantoms in no/, yes/ and a third class, other/ (lesions from another seed), trained 2 epochs."""
    base = tmp_path_factory.mktemp("three")
    data = base / "data"
    shutil.copytree(phantom_root, data)
    others = generate_phantom_dataset(base / "others", per_class=20, size=64, seed=1)
    shutil.copytree(others / "yes", data / "other")
    run = base / "run"
    train(compose_task("train", run, *FAST_TRAINING, f"data.root={data}"))
    return run


def test_three_class_folders_train_evaluate_and_report_alike(three_class_run, tmp_path):
    metrics = read_json(three_class_run / "metrics.json")
    predictions = read_csv(three_class_run / "predictions.csv")
    assert [c for c in predictions[0] if c.startswith("prob_")] == ["prob_no", "prob_other", "prob_yes"]
    assert {p["class"] for p in predictions} == {"no", "other", "yes"} and metrics["positive_class"] is None
    for row in predictions:
        probabilities = [float(row[f"prob_{c}"]) for c in ("no", "other", "yes")]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert int(row["predicted"]) == probabilities.index(max(probabilities))

    evaluate(compose_task("eval", tmp_path, f"ckpt_path={metrics['best_checkpoint']}"))
    again = read_json(tmp_path / "metrics.json")
    for name in METRICS:
        assert again[f"test/{name}"] == pytest.approx(metrics[f"test/{name}"], abs=1e-6), name

    report([str(three_class_run), "--resamples", "200"])
    best = read_json(three_class_run / "report" / "best.json")
    assert best["classes"] == ["no", "other", "yes"] and best["averaging"].startswith("macro")
    for name in METRICS:  # the report's NumPy metrics equal the run's torchmetrics ones
        assert best[f"{name}/estimate"] == pytest.approx(metrics[f"test/{name}"], abs=1e-6), name


def test_the_positive_class_of_binary_metrics_is_configurable():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])
    default = BrainMRIClassifier(class_names=["no", "yes"])
    assert default.hparams.positive_class == "yes" and default.positive_index == 1
    flipped = BrainMRIClassifier(class_names=["no", "yes"], positive_class="no")
    scores, targets = flipped._scores(logits, labels)
    assert targets.tolist() == [1, 0, 0] and torch.allclose(scores, logits.softmax(dim=1)[:, 0])
    with pytest.raises(Exception, match="positive_class=tumour is not one of"):
        BrainMRIClassifier(class_names=["no", "yes"], positive_class="tumour")


def test_the_sanity_check_on_batches_of_one_class_raises_no_metric_warning(phantom_root, tmp_path):
    """Lightning's sanity check validates two batches before training; in batches of two, ordered by
    class, they miss a class, whose one-vs-rest AUROC torchmetrics would warn about."""
    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    others = generate_phantom_dataset(tmp_path / "others", per_class=20, size=64, seed=1)
    shutil.copytree(others / "yes", data / "other")
    overrides = [*FAST_TRAINING, f"data.root={data}", "data.batch_size=2", "trainer.max_epochs=1"]
    overrides += ["trainer.limit_train_batches=1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(compose_task("train", tmp_path / "run", *overrides))
    assert not [w for w in caught if "samples in targets" in str(w.message)]
    assert not (tmp_path / "run" / "gallery.csv").exists()  # gallery_images=0 (FAST_TRAINING): none drawn
