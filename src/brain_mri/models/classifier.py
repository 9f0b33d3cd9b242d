"""BrainMRIClassifier: one LightningModule for every backbone, built from primitive hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection, MinMetric
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    CohenKappa,
    F1Score,
    Recall,
    Specificity,
)

from brain_mri.checkpoints import verify_checksums
from brain_mri.errors import BrainMRIError
from brain_mri.models.backbones import BACKBONES, build_backbone, unknown_architecture

OPTIMIZERS = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9),
}


def classification_metrics(num_classes: int, names: tuple[str, ...], prefix: str) -> MetricCollection:
    """torchmetrics objects. Two classes: binary metrics of the positive class (targets 1 = positive).
    More: accuracy over all images, the other metrics one-vs-rest and averaged over classes (macro)."""
    task: dict[str, Any] = {"task": "binary"}
    averaged: dict[str, Any] = {}
    overall: dict[str, Any] = {}
    if num_classes > 2:
        task = {"task": "multiclass", "num_classes": num_classes}
        averaged, overall = {"average": "macro"}, {"average": "micro"}
    factories = {
        "accuracy": lambda: Accuracy(**task, **overall),
        "auroc": lambda: AUROC(**task),
        "sensitivity": lambda: Recall(**task, **averaged),
        "specificity": lambda: Specificity(**task, **averaged),
        "f1": lambda: F1Score(**task, **averaged),
        "cohen_kappa": lambda: CohenKappa(**task),
    }
    return MetricCollection({name: factories[name]() for name in names}, prefix=prefix)


def model_setting_problems(arch: str, lr: float, weight_decay: float, optimizer: str) -> list[str]:
    """What is wrong with these settings, one sentence each (used at start and by the constructor)."""
    problems = []
    if arch not in BACKBONES:
        problems.append(unknown_architecture(arch))
    if optimizer not in OPTIMIZERS:
        problems.append(f"Unknown optimizer '{optimizer}'. Choose one of: {', '.join(OPTIMIZERS)}.")
    if not lr > 0:
        problems.append(f"model.lr must be greater than 0, got {lr}.")
    if weight_decay < 0:
        problems.append(f"model.weight_decay must be 0 or more, got {weight_decay}.")
    return problems


def resolve_positive_class(class_names: list[str], positive_class: str | None) -> str | None:
    """The class binary metrics call positive: as configured, else ``yes`` (tumour) or the second class.
    None for more than two classes, whose metrics are averaged over classes."""
    if len(class_names) != 2:
        return None
    if positive_class is None:
        return "yes" if "yes" in class_names else class_names[1]
    if positive_class not in class_names:
        raise BrainMRIError(f"model.positive_class={positive_class} is not one of the classes {class_names}.")
    return str(positive_class)


def resolve_class_names(class_names: Sequence[str] | None, num_classes: int | None) -> list[str]:
    """Plain strings (a Hydra list would not reload with ``weights_only``); without names, ``no``/``yes``
    for two classes (checkpoints written before class names were stored) and ``class_<i>`` beyond."""
    if class_names is None:
        count = num_classes or 2
        return ["no", "yes"] if count == 2 else [f"class_{i}" for i in range(count)]
    names = [str(name) for name in class_names]
    if num_classes is not None and num_classes != len(names):
        raise BrainMRIError(f"num_classes={num_classes} does not match the {len(names)} class names {names}.")
    if len(set(names)) != len(names) or len(names) < 2:
        raise BrainMRIError(f"A classifier needs at least two distinct class names, got {names}.")
    return names


class BrainMRIClassifier(L.LightningModule):
    """Image classifier whose checkpoint reloads with ``BrainMRIClassifier.load_from_checkpoint(path)``.

    The model carries its input contract as hyperparameters: the class names (which output is which
    class) and ``image_size``; its input is a float (N, 3, image_size, image_size) batch in [0, 1], the
    grayscale repeated three times, as :func:`brain_mri.preprocessing.prepare_images` makes it. Each
    checkpoint also records the precision it was trained with and the content hashes (sha256) of its
    training and validation images (``provenance``), so evaluation can say how many it has seen.

    Logs ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``val/auroc``,
    ``val/loss_best`` per epoch, and the ``test/*`` metrics when tested.
    """

    if TYPE_CHECKING:  # Lightning types hparams as a mapping; ours are read as attributes

        @property
        def hparams(self) -> Any: ...

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        positive_class: str | None = None,
        image_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        channels_last: bool = True,
    ):
        super().__init__()
        problems = model_setting_problems(arch, lr, weight_decay, optimizer)
        if problems:
            raise BrainMRIError("\n".join(problems))
        class_names = resolve_class_names(class_names, num_classes)
        num_classes = len(class_names)
        positive_class = resolve_positive_class(class_names, positive_class)
        self.save_hyperparameters(logger=False)
        # Filled by the training task; saved with every checkpoint (see on_save_checkpoint).
        self.provenance: dict = {"precision": None, "train_sha256": [], "val_sha256": []}
        self.net = build_backbone(arch, num_classes)
        if channels_last:  # NHWC convolutions are faster on current CPUs and tensor-core GPUs
            self.net = self.net.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss()
        self.train_metrics = classification_metrics(num_classes, ("accuracy",), "train/")
        self.val_metrics = classification_metrics(num_classes, ("accuracy", "auroc"), "val/")
        self.test_metrics = classification_metrics(
            num_classes, ("accuracy", "auroc", "sensitivity", "specificity", "f1", "cohen_kappa"), "test/"
        )
        self.val_loss = MeanMetric()  # metric objects average over every image, across processes under DDP
        self.test_loss = MeanMetric()
        self.val_loss_best = MinMetric()
        self.val_loss_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    @property
    def positive_index(self) -> int | None:
        """The label of the positive class (two classes), else None."""
        positive = self.hparams.get("positive_class")
        return None if positive is None else list(self.hparams.class_names).index(positive)

    def _scores(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the metrics take: the positive class's probability and 1/0 targets (two classes), or all
        probabilities and the labels."""
        probabilities = logits.float().softmax(dim=1)  # bf16 logits would round probabilities coarsely
        positive = self.positive_index
        if positive is None:
            return probabilities, labels
        return probabilities[:, positive], (labels == positive).long()

    def _step(self, batch, metrics: MetricCollection) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        metrics.update(*self._scores(logits.detach(), labels))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics)
        batch_size = len(batch[1])
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        """Stop a diverged run as failed (runs after validation, before this epoch's checkpoints)."""
        for name in ("train/loss", "val/loss"):
            loss = self.trainer.callback_metrics.get(name)
            if loss is not None and not torch.isfinite(loss):
                lr = self.hparams.lr
                raise BrainMRIError(
                    f"Training diverged: {name} is {loss.item()} in epoch {self.current_epoch} (lr={lr}). "
                    "Try a smaller learning rate; the best checkpoint so far is kept."
                )

    def validation_step(self, batch, batch_idx: int) -> None:
        loss = self._step(batch, self.val_metrics)
        self.val_loss.update(loss, weight=len(batch[1]))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_loss_best.update(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss = self._step(batch, self.test_metrics)
        self.test_loss.update(loss, weight=len(batch[1]))
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, _ = batch
        return self(images).float().softmax(dim=1)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's, after checking the file's CRC-32 checksums: a damaged file is refused, never
        loaded as wrong weights."""
        if isinstance(checkpoint_path, (str, Path)) and Path(checkpoint_path).is_file():
            verify_checksums(Path(checkpoint_path))
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the random state, so that training resumed from this checkpoint continues exactly, and
        what the model was trained with (precision, hashes of the images it has seen)."""
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()
        if self._trainer is not None:
            self.provenance["precision"] = str(self.trainer.precision)
        checkpoint["provenance"] = self.provenance

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.provenance = {**self.provenance, **checkpoint.get("provenance", {})}
        states = checkpoint.get("rng_states")
        if states is None or self._trainer is None or self.trainer.state.fn != "fit":
            return  # only when resuming training, never as a side effect of loading a model
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        make = OPTIMIZERS[self.hparams.optimizer]
        return make(self.parameters(), self.hparams.lr, self.hparams.weight_decay)
