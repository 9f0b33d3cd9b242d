"""Fine-tuning: a new run from another checkpoint's weights alone (init_from=), with new settings."""

import logging

import pytest
import torch

from brain_mri.config.settings import check_train_settings
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import read_json
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, compose_task


def test_a_run_from_another_runs_weights_starts_where_they_are_and_trains_with_new_settings(
    trained_run, phantom_root, tmp_path
):
    source = read_json(trained_run / "metrics.json")
    run = tmp_path / "tuned"
    overrides = [
        *FAST_TRAINING,
        f"data.root={phantom_root}",
        f"data.split_file={trained_run / 'split.csv'}",  # the same validation images
        f"init_from={trained_run}",  # a run folder: its best checkpoint
        "optimizer=sgd",
        "model.lr=1e-4",
        "trainer.max_epochs=1",
    ]
    train(compose_task("train", run, *overrides))
    start = read_json(run / "run_info.json")["init_from"]
    assert start["checkpoint"] == source["best_checkpoint"] and start["head_replaced"] is False
    # before any training step, the validation loss is the one the source logged at its best epoch
    assert start["val/loss_before_training"] == pytest.approx(source["val/loss_best"], abs=1e-5)
    assert read_json(run / "metrics.json")["epochs_trained"] == 1
    tuned = load_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert (tuned["optimizer"], tuned["lr"]) == ("sgd", 1e-4)


def test_weights_for_other_classes_keep_the_backbone_and_start_the_head_anew(trained_run, caplog):
    checkpoint = dict(load_checkpoint(read_json(trained_run / "metrics.json")["best_checkpoint"]))
    three = ["glioma", "meningioma", "pituitary"]
    checkpoint["hyper_parameters"] = {
        **checkpoint["hyper_parameters"],
        "class_names": three,
        "num_classes": 3,
    }
    weights = dict(checkpoint["state_dict"])
    weights["net.fc.weight"], weights["net.fc.bias"] = torch.ones(3, 512), torch.ones(3)
    checkpoint["state_dict"] = weights
    model = BrainMRIClassifier(class_names=["no", "yes"])
    fresh_head = model.net.fc.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="brain_mri"):
        assert model.start_from(checkpoint, "three.ckpt") is True
    assert "its classes ['glioma', 'meningioma', 'pituitary'] differ from this data's ['no', 'yes']" in (
        caplog.text
    )
    own = model.state_dict()
    backbone = [k for k in weights if k.startswith("net.") and not k.startswith("net.fc.")]
    assert backbone and all(torch.equal(own[k], weights[k]) for k in backbone)
    assert torch.equal(model.net.fc.weight, fresh_head)


def test_weights_for_the_same_classes_are_all_copied(trained_run):
    checkpoint = load_checkpoint(read_json(trained_run / "metrics.json")["best_checkpoint"])
    model = BrainMRIClassifier(class_names=["no", "yes"])
    assert model.start_from(checkpoint, "same.ckpt") is False
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in checkpoint["state_dict"].items() if k.startswith("net."))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=vgg11"], r"init_from=.* holds a resnet18, but this run builds a vgg11: set model=resnet18"),
        (["model.weights=imagenet"], r"replaces the network's weights: drop model\.weights"),
        (["ckpt_path={last}"], r"ckpt_path=.* and init_from=.*: set one"),
    ],
)
def test_a_start_from_weights_that_cannot_work_is_refused_before_anything_is_written(
    trained_run, tmp_path, overrides, message
):
    best = read_json(trained_run / "metrics.json")["best_checkpoint"]
    last = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_task(
        "train",
        tmp_path / "run",
        *FAST_TRAINING,
        f"init_from={best}",
        *(o.format(last=last) for o in overrides),
    )
    with pytest.raises(BrainMRIError, match=message):
        check_train_settings(cfg)
    assert not (tmp_path / "run").exists()


def test_training_cannot_continue_from_a_best_checkpoint_which_holds_weights_only(trained_run, tmp_path):
    best = read_json(trained_run / "metrics.json")["best_checkpoint"]
    assert "optimizer_states" not in load_checkpoint(best)
    assert "optimizer_states" in load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    cfg = compose_task("train", tmp_path, *FAST_TRAINING, f"ckpt_path={best}", "trainer.max_epochs=5")
    with pytest.raises(BrainMRIError, match=rf"holds weights only .* init_from={best}"):
        check_train_settings(cfg)


def test_a_refused_change_of_learning_rate_points_to_init_from(trained_run, tmp_path):
    last = trained_run / "checkpoints" / "last.ckpt"
    cfg = compose_task(
        "train", tmp_path, *FAST_TRAINING, f"ckpt_path={last}", "model.lr=1e-4", "trainer.max_epochs=5"
    )
    with pytest.raises(BrainMRIError, match=rf"model\.lr=0\.0001 .*init_from={last}"):
        check_train_settings(cfg)
