"""Evaluation of a checkpoint: classes matched by name, images the model has seen, and the training
run's own settings (unreadable files, precision) carried over."""

import shutil
from pathlib import Path

import pytest
import torch

from brain_mri.data.preprocessing import prepare_images
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import precision_for_checkpoint
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.files import read_csv, read_json
from brain_mri.tasks.evaluate import evaluate
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, compose_task, corrupt_copy


def evaluate_in(folder, checkpoint, *overrides):
    evaluate(compose_task("eval", folder, f"ckpt_path={checkpoint}", *overrides))
    return read_json(folder / "metrics.json"), read_csv(folder / "predictions.csv")


@pytest.fixture(scope="module")
def on_training_folder(trained_run, phantom_root, tmp_path_factory):
    """eval.on=all on the very folder the model was trained on."""
    checkpoint = read_json(trained_run / "metrics.json")["best_checkpoint"]
    return evaluate_in(
        tmp_path_factory.mktemp("eval"), checkpoint, "eval.on=all", f"data.root={phantom_root}"
    )


def test_folders_are_matched_to_the_models_classes_by_name(
    trained_run, phantom_root, on_training_folder, tmp_path
):
    renamed = tmp_path / "renamed"
    shutil.copytree(phantom_root / "yes", renamed / "abnormal")  # sorts first, where "no" was
    shutil.copytree(phantom_root / "no", renamed / "normal")
    checkpoint = read_json(trained_run / "metrics.json")["best_checkpoint"]
    with pytest.raises(BrainMRIError) as error:
        evaluate_in(tmp_path / "refused", checkpoint, "eval.on=all", f"data.root={renamed}")
    assert "['abnormal', 'normal']" in str(error.value) and "['no', 'yes']" in str(error.value)
    assert "eval.class_map={abnormal: <class>, normal: <class>}" in str(error.value)

    metrics, predictions = evaluate_in(
        tmp_path / "mapped",
        checkpoint,
        "eval.on=all",
        f"data.root={renamed}",
        "eval.class_map={abnormal: yes, normal: no}",
    )
    assert {p["label"] for p in predictions if p["path"].startswith("abnormal/")} == {"1"}
    assert {p["label"] for p in predictions if p["path"].startswith("normal/")} == {"0"}
    original = on_training_folder[0]
    for name in ("test/accuracy", "test/auroc", "test/sensitivity", "test/specificity"):
        assert metrics[name] == pytest.approx(original[name]), name


def test_evaluation_says_how_many_images_the_model_has_seen(trained_run, on_training_folder):
    split = read_csv(trained_run / "split.csv")
    metrics = on_training_folder[0]
    assert metrics["images_evaluated"] == len(split) == 44
    assert metrics["images_seen_in_training"] == sum(r["partition"] == "train" for r in split)
    assert metrics["images_seen_in_validation"] == sum(r["partition"] == "val" for r in split)
    own_test = read_json(trained_run / "metrics.json")
    assert own_test["images_seen_in_training"] == own_test["images_seen_in_validation"] == 0
    assert own_test["images_evaluated"] == sum(r["partition"] == "test" for r in split)


def test_eval_repeats_a_run_that_skipped_files_in_its_own_precision(phantom_root, tmp_path):
    data, bad = corrupt_copy(phantom_root, tmp_path / "data")
    run = tmp_path / "run"
    train(
        compose_task(
            "train",
            run,
            *FAST_TRAINING,
            f"data.root={data}",
            "data.on_bad_image=skip",
            "trainer.precision=32-true",
            "trainer.max_epochs=1",
        )
    )
    assert sorted(r["path"] for r in read_csv(run / "bad_images.csv")) == bad
    checkpoint = read_json(run / "metrics.json")["best_checkpoint"]
    metrics, _ = evaluate_in(tmp_path / "eval", checkpoint)
    assert metrics["test/loss"] == read_json(run / "metrics.json")["test/loss"]
    assert (tmp_path / "eval" / "predictions.csv").read_text() == (run / "predictions.csv").read_text()
    assert sorted(r["path"] for r in read_csv(tmp_path / "eval" / "bad_images.csv")) == bad


def test_a_precision_this_machine_lacks_falls_back_with_a_note(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision_for_checkpoint("32-true", "cpu") == ("32-true", None)
    chosen, note = precision_for_checkpoint("bf16-mixed", "cpu")
    assert chosen == "32-true" and "bf16-mixed" in note
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision_for_checkpoint("bf16-mixed", "cpu") == ("bf16-mixed", None)


def test_a_sweep_folder_is_evaluated_as_the_ensemble_of_its_runs(small_sweep, tmp_path):
    metrics, rows = evaluate_in(tmp_path / "mean", small_sweep)
    assert [m.split("/")[-3] for m in metrics["members"]] == ["0", "1"]  # the two completed jobs
    members = [
        {r["path"]: float(r["prob_yes"]) for r in read_csv(small_sweep / j / "predictions.csv")} for j in "01"
    ]
    assert len(rows) == len(members[0]) == metrics["images_evaluated"]
    for row in rows:  # the mean of what each run predicted on its own, and half their difference
        first, second = members[0][row["path"]], members[1][row["path"]]
        assert float(row["prob_yes"]) == pytest.approx((first + second) / 2, abs=1e-5)
        assert float(row["spread"]) == pytest.approx(abs(first - second) / 2, abs=1e-5)
    flipped, flipped_rows = evaluate_in(tmp_path / "flip", small_sweep, "eval.tta=flip")
    assert flipped["tta"] == "flip" and len(flipped_rows) == len(rows)
    # the mean over both members of each one's probability for the image and for its mirror image
    models = [BrainMRIClassifier.load_from_checkpoint(member).eval() for member in flipped["members"]]
    root = Path(read_json(small_sweep / "0" / "run_info.json")["data_root"])
    images = prepare_images([root / r["path"] for r in flipped_rows], models[0].hparams.image_size)
    with torch.no_grad():
        views = [m(view).softmax(dim=1)[:, 1] for m in models for view in (images, images.flip(-1))]
    expected = torch.stack(views).mean(dim=0).tolist()
    assert [float(r["prob_yes"]) for r in flipped_rows] == pytest.approx(expected, abs=1e-5)


def test_models_with_other_inputs_are_not_averaged():
    from brain_mri.models import BrainMRIClassifier, EnsembleClassifier

    with pytest.raises(BrainMRIError, match=r"different classes or inputs.*image_size"):
        EnsembleClassifier([BrainMRIClassifier(image_size=32), BrainMRIClassifier(image_size=64)])
    with pytest.raises(BrainMRIError, match=r"different classes or inputs.*class_names"):
        EnsembleClassifier([BrainMRIClassifier(), BrainMRIClassifier(class_names=["normal", "tumour"])])


def test_members_trained_in_other_precisions_are_averaged_in_full_precision():
    from brain_mri.models import BrainMRIClassifier, EnsembleClassifier

    members = [BrainMRIClassifier(), BrainMRIClassifier(), BrainMRIClassifier()]
    for member, precision in zip(members, ["bf16-mixed", "32-true", "bf16-mixed"], strict=True):
        member.provenance["precision"] = precision
    assert EnsembleClassifier(members).provenance["precision"] == "32-true"
    assert EnsembleClassifier(members[::2]).provenance["precision"] == "bf16-mixed"


@pytest.mark.parametrize("given", [[], ["ckpt_path=null"], ["ckpt_path="]])
def test_eval_without_a_checkpoint_is_one_message(tmp_path, given):
    with pytest.raises(BrainMRIError, match=r"eval\.py needs ckpt_path=<\.\.\.>"):
        evaluate(compose_task("eval", tmp_path, *given))


def test_an_ensemble_of_runs_with_other_test_partitions_is_refused(small_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    for job in "01":
        shutil.copytree(small_sweep / job, sweep / job)
    split = (sweep / "1" / "split.csv").read_text().splitlines()
    moved = next(i for i, line in enumerate(split) if ",test," in line)
    split[moved] = split[moved].replace(",test,", ",train,")  # job 1 tested on one image fewer
    (sweep / "1" / "split.csv").write_text("\n".join(split) + "\n")
    with pytest.raises(BrainMRIError, match="another test partition"):
        evaluate(compose_task("eval", tmp_path / "eval", f"ckpt_path={sweep}"))


def test_nothing_a_checkpoint_names_chooses_a_folder_evaluation_writes_or_trusts(trained_run, tmp_path):
    from brain_mri.runs.checkpoints import load_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "split.csv", run / "split.csv")
    checkpoint = load_checkpoint(read_json(trained_run / "metrics.json")["best_checkpoint"])
    planted = tmp_path / "planted"
    checkpoint["datamodule_hyper_parameters"]["cache_dir"] = str(planted)
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    evaluate_in(tmp_path / "eval", run / "checkpoints" / "best.ckpt", f"data.cache_dir={tmp_path / 'own'}")
    assert not planted.exists() and list((tmp_path / "own").rglob("*.npy"))  # this run's cache only
    with pytest.raises(BrainMRIError, match=r"eval\.on=all tests every image of a folder: name it"):
        evaluate_in(tmp_path / "all", run / "checkpoints" / "best.ckpt", "eval.on=all")
