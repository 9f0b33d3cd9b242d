from types import SimpleNamespace

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.backbones import BACKBONES, build_backbone
from helpers import PROJECT_ROOT


def compose_train(*overrides):
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_model_config_composes_and_trains_a_step(arch):
    cfg = compose_train(f"model={arch}")
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, BrainMRIClassifier) and model.hparams.arch == arch
    assert dict(model.hparams) == {
        "arch": arch,
        "num_classes": 2,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "channels_last": True,
    }
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    logits = model(images)
    assert logits.shape == (2, 2)
    model.criterion(logits, labels).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_defaults_follow_the_study():
    cfg = compose_train()
    assert cfg.model.arch == "resnet18" and cfg.model.lr == 1e-3 and cfg.data.batch_size == 25
    assert cfg.data.image_size == 100 and cfg.trainer.max_epochs == 100
    assert cfg.callbacks.early_stopping.patience == 5 and cfg.callbacks.model_checkpoint.monitor == "val/loss"


def test_vgg11_is_the_batch_norm_variant():
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build_backbone("vgg11", 2).modules())


def test_unknown_names_list_the_choices():
    with pytest.raises(BrainMRIError, match="densenet121, resnet18, vgg11"):
        build_backbone("resnet1000", 2)
    with pytest.raises(BrainMRIError, match="adam, adamw, sgd"):
        BrainMRIClassifier(optimizer="lbfgs")


@pytest.mark.parametrize(
    ("name", "kind"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_is_chosen_by_name(name, kind):
    optimizer = BrainMRIClassifier(optimizer=name, lr=0.01, weight_decay=0.1).configure_optimizers()
    assert isinstance(optimizer, kind)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 0.1


def test_a_diverging_loss_stops_training_with_a_clear_message():
    model = BrainMRIClassifier()
    model._trainer = SimpleNamespace(
        callback_metrics={"train/loss": torch.tensor(float("nan"))}, current_epoch=3
    )
    with pytest.raises(BrainMRIError, match=r"diverged.*epoch 3.*best checkpoint so far is kept"):
        model.on_train_epoch_end()
    model._trainer.callback_metrics["train/loss"] = torch.tensor(0.4)
    model.on_train_epoch_end()
