import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.backbones import BACKBONES, build_backbone
from brain_mri.runs.files import best_checkpoints, read_json
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, PROJECT_ROOT, compose_task


def compose_train(*overrides):
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_model_config_builds_a_network_that_learns(arch):
    model = hydra.utils.instantiate(compose_train(f"model={arch}").model, class_names=["no", "yes"])
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    logits = model(images)
    assert logits.shape == (2, 2)
    model.criterion(logits, labels).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_class_names_set_the_number_of_outputs():
    model = BrainMRIClassifier(class_names=["glioma", "meningioma", "none", "pituitary"])
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4) and model.hparams.num_classes == 4
    with pytest.raises(BrainMRIError, match="does not match"):
        BrainMRIClassifier(num_classes=3, class_names=["no", "yes"])


def test_defaults_follow_the_study():
    cfg = compose_train()
    assert cfg.model.arch == "resnet18" and cfg.model.lr == 1e-3 and cfg.data.batch_size == 25
    assert cfg.data.image_size == 100 and cfg.trainer.max_epochs == 100
    assert cfg.callbacks.early_stopping.patience == 5 and cfg.callbacks.model_checkpoint.monitor == "val/loss"


def test_vgg11_is_the_batch_norm_variant():
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build_backbone("vgg11", 2).modules())


def test_unknown_names_list_the_choices():
    with pytest.raises(BrainMRIError, match="densenet121, efficientnet_b0, resnet18, resnet50, vgg11"):
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


def test_a_diverging_run_stops_as_failed_and_keeps_its_best_checkpoint(phantom_root, tmp_path):
    """The model's output turns NaN in the validation of epoch 1, after a finite epoch 0."""
    cfg = compose_task(
        "train",
        tmp_path,
        *FAST_TRAINING,
        f"data.root={phantom_root}",
        "trainer.limit_train_batches=1",
        "trainer.max_epochs=4",
        "callbacks.early_stopping=null",
        "+callbacks.poison._target_=helpers.PoisonAt",
        "+callbacks.poison.epoch=1",
    )
    with pytest.raises(
        BrainMRIError, match=r"diverged: val/loss is nan in epoch 1 \(lr=0.001.*so far is kept"
    ):
        train(cfg)
    assert [p.name[:8] for p in (tmp_path / "checkpoints").glob("epoch*.ckpt")] == ["epoch000"]
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["status"] == "failed" and "diverged" in metrics["error"]


def test_a_run_that_diverges_in_its_first_epoch_says_that_no_checkpoint_was_saved(phantom_root, tmp_path):
    overrides = ["trainer.limit_train_batches=1", "trainer.max_epochs=1"]
    overrides += ["+callbacks.poison._target_=helpers.PoisonAt", "+callbacks.poison.epoch=0"]
    with pytest.raises(BrainMRIError, match=r"diverged: .* in epoch 0 .*no checkpoint was saved"):
        train(compose_task("train", tmp_path, *FAST_TRAINING, f"data.root={phantom_root}", *overrides))
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))
    with pytest.raises(BrainMRIError, match=r"1 run\(s\) failed; the first: .*: Training diverged"):
        best_checkpoints(tmp_path)  # what eval.py ckpt_path=<this run> says
