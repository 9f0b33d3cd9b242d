"""The training recipe as configuration: schedules, parameter groups, label smoothing, pretrained weights
with a frozen warm-up, the brain crop, more backbones, experiment=study and experiment=modern."""

import urllib.request

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from PIL import Image

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.index import build_index
from brain_mri.data.preprocessing import crop_to_brain
from brain_mri.errors import BrainMRIError, user_error
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.classifier import warmup_cosine
from brain_mri.runs.files import read_csv, read_json
from brain_mri.tasks.evaluate import evaluate
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, PROJECT_ROOT, compose_task


def test_cosine_schedule_warms_up_linearly_then_falls_to_zero():
    factors = [warmup_cosine(step, warmup=10, total=110) for step in (0, 4, 9, 10, 60, 110)]
    assert factors == pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.0])


def test_weight_decay_can_leave_out_norms_and_biases():
    model = BrainMRIClassifier(optimizer="adamw", weight_decay=0.05, decay_norms_and_biases=False)
    decayed, other = model.configure_optimizers().param_groups
    assert decayed["weight_decay"] == 0.05 and other["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # kernels and the head's matrix
    assert all(p.ndim == 1 for p in other["params"]) and len(other["params"]) == 41  # 20 BN x 2 + fc bias
    assert len(decayed["params"]) + len(other["params"]) == len(list(model.parameters()))


def test_label_smoothing_is_a_training_loss_only():
    model = BrainMRIClassifier(label_smoothing=0.2)
    confident = torch.tensor([[20.0, -20.0]])
    assert model.criterion(confident, torch.tensor([0])).item() < 1e-6  # validation: plain cross-entropy
    # smoothed: 0.1 of the target mass goes to the other class, at a cost of about 0.1 * 40
    assert model.train_criterion(confident, torch.tensor([0])).item() == pytest.approx(4.0, rel=0.01)


def test_the_modern_recipe_runs_its_one_cycle_and_writes_validation_predictions(phantom_root, tmp_path):
    cfg = compose_task(
        "train",
        tmp_path,
        "experiment=modern",
        *FAST_TRAINING,
        "trainer.max_epochs=4",
        f"data.root={phantom_root}",
    )
    assert cfg.model.optimizer == "adamw" and cfg.model.scheduler == "onecycle" and cfg.data.image_size == 32
    assert cfg.model.label_smoothing == 0.1 and cfg.data.augmentation.crop_scale == 0.7
    train(cfg)
    logged = read_csv(tmp_path / "csv" / "metrics.csv")  # the monitor logs at each epoch's start
    rates = [float(row["lr-AdamW/pg1"]) for row in logged if row["lr-AdamW/pg1"]]
    assert len(rates) == 4 and rates[0] < rates[1] and rates[-1] < rates[1]  # up, then down
    assert max(rates) <= 1e-3 * 1.0001
    split = read_csv(tmp_path / "split.csv")
    val = {r["path"] for r in split if r["partition"] == "val"}
    assert {r["path"] for r in read_csv(tmp_path / "val_predictions.csv")} == val


def test_the_study_experiment_is_the_studys_settings():
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=study"])
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.model.optimizer, cfg.model.lr) == (
        100,
        25,
        "adam",
        1e-3,
    )
    assert cfg.callbacks.early_stopping.patience == 5 and cfg.data.augmentation.get("flip", 0) == 0
    assert cfg.model.scheduler == "constant" and cfg.trainer.precision == "32-true"


class WeightRecorder(L.Callback):
    def __init__(self):
        self.after_epoch = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.after_epoch.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def test_a_local_state_dict_starts_training_with_a_frozen_backbone(phantom_root, tmp_path):
    pretrained = torchvision.models.resnet18().state_dict()  # a 1000-class head, as torchvision saves it
    path = tmp_path / "resnet18.pt"
    torch.save(pretrained, path)
    model = BrainMRIClassifier(
        weights_path=str(path),
        freeze_backbone_epochs=1,
        optimizer="adamw",
        weight_decay=0.05,
        decay_norms_and_biases=False,
        scheduler="onecycle",
        warmup_fraction=0.3,
        channels_last=False,
    )
    assert model.hparams.normalization == "imagenet"  # what the weights were trained with
    assert torch.equal(model.net.conv1.weight, pretrained["conv1.weight"])
    recorder = WeightRecorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    data = BrainMRIDataModule(str(phantom_root), image_size=32, batch_size=8)
    trainer.fit(model, datamodule=data)
    frozen, unfrozen = recorder.after_epoch
    for name in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean", "bn1.weight"):
        assert torch.equal(frozen[name], pretrained[name]), name  # epoch 0: the backbone did not move
        assert not torch.equal(unfrozen[name], pretrained[name]), name  # epoch 1: it trains
    assert not torch.equal(frozen["fc.weight"], unfrozen["fc.weight"])
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    path.unlink()  # reloading needs no weights file (nor a download)
    reloaded = BrainMRIClassifier.load_from_checkpoint(checkpoint)
    assert torch.equal(reloaded.net.conv1.weight, model.net.conv1.weight)
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(reloaded.eval()(images), model.eval()(images), atol=1e-5)


def test_a_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "vgg.pt"
    torch.save(torchvision.models.vgg11_bn().state_dict(), path)
    with pytest.raises(Exception, match="is not a resnet18 state dict"):
        BrainMRIClassifier(weights_path=str(path))


def test_imagenet_weights_offline_stop_with_one_message(phantom_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # and no way out, even where there is one
    monkeypatch.setattr(urllib.request, "_opener", None)  # an opener built earlier would keep its proxies
    overrides = [*FAST_TRAINING, f"data.root={phantom_root}", "model.weights=imagenet"]
    with pytest.raises(Exception) as stopped:  # Hydra's instantiate wraps it; train.py unwraps it
        train(compose_task("train", tmp_path, *overrides))
    message = str(user_error(stopped.value))
    assert message.startswith("Downloading the ImageNet weights of resnet18")
    assert "model.weights_path" in message


def head_slice(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    pixels = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = box
    rows, cols = np.ogrid[:height, :width]
    inside = ((cols - (left + right) / 2) / ((right - left) / 2)) ** 2 + (
        (rows - (top + bottom) / 2) / ((bottom - top) / 2)
    ) ** 2 <= 1
    pixels[inside] = 160
    pixels[5:9, 5:40] = 255  # a burnt-in label, smaller than the head
    return Image.fromarray(pixels)


def test_the_brain_crop_keeps_the_head_and_drops_the_margins():
    cropped = crop_to_brain(head_slice(400, 300, (150, 60, 330, 260)))
    left, top = 150 - 8, 60 - 8  # 2 % margin of the longer side
    assert abs(cropped.width - (180 + 16)) <= 4 and abs(cropped.height - (200 + 16)) <= 4
    assert np.asarray(cropped)[:4].max() == 0 and left > 0 and top > 0
    blank = Image.new("L", (64, 64))
    assert crop_to_brain(blank).size == (64, 64)  # nothing to crop to: the whole image


def test_the_split_does_not_depend_on_the_crop(phantom_root):
    plain, cropped = build_index(phantom_root, 32), build_index(phantom_root, 32, crop="brain")
    assert np.array_equal(plain.groups, cropped.groups) and plain.sha256 == cropped.sha256
    assert not np.array_equal(plain.pixels, cropped.pixels)


@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_b0", "convnext_tiny"])
def test_new_backbones_train_reload_and_evaluate(arch, phantom_root, tmp_path):
    run = tmp_path / "run"
    overrides = [*FAST_TRAINING, f"data.root={phantom_root}", f"model={arch}", "trainer.max_epochs=1"]
    train(compose_task("train", run, *overrides, "trainer.limit_train_batches=2"))
    metrics = read_json(run / "metrics.json")
    model = BrainMRIClassifier.load_from_checkpoint(metrics["best_checkpoint"])
    assert model.hparams.arch == arch and model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    evaluate(compose_task("eval", tmp_path / "eval", f"ckpt_path={metrics['best_checkpoint']}"))
    evaluated = read_json(tmp_path / "eval" / "metrics.json")
    assert evaluated["test/auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)


def test_weight_averaging_is_a_callback_option(phantom_root, tmp_path):
    cfg = compose_task(
        "train", tmp_path, *FAST_TRAINING, f"data.root={phantom_root}", "+callbacks/weight_averaging=ema"
    )
    assert cfg.callbacks.weight_averaging.decay == 0.99
    train(cfg)
    metrics = read_json(tmp_path / "metrics.json")
    # the test metrics are those of the averaged weights, which the checkpoint holds and eval.py loads
    evaluate(compose_task("eval", tmp_path / "eval", f"ckpt_path={metrics['best_checkpoint']}"))
    evaluated = read_json(tmp_path / "eval" / "metrics.json")
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-6)
    assert read_csv(tmp_path / "eval" / "predictions.csv") == read_csv(tmp_path / "predictions.csv")


def test_prepare_images_refuses_a_crop_it_does_not_know(phantom_root):
    from brain_mri.data.preprocessing import prepare_images

    with pytest.raises(BrainMRIError, match="crop must be one of none, brain"):
        prepare_images([next((phantom_root / "yes").iterdir())], 32, "Brain")
