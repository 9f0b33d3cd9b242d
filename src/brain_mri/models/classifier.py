"""BrainMRIClassifier: one LightningModule for every backbone, built from primitive hyperparameters."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
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

from brain_mri.data.preprocessing import CROPS
from brain_mri.errors import BrainMRIError
from brain_mri.hardware import PRECISIONS
from brain_mri.models.backbones import BACKBONES, PRETRAINED, build_backbone, unknown_architecture
from brain_mri.runs.checkpoints import keeps_best_checkpoints, load_checkpoint

log = logging.getLogger(__name__)

MAX_IMAGE_SIZE = 4096  # pixels per side: larger is a damaged value, not a model

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


SCHEDULERS = ("constant", "onecycle", "cosine")
# Per-channel mean and standard deviation of the input in [0, 1]; "none" is the study's raw [0, 1] input.
NORMALIZATIONS = {"none": None, "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


_restoring: ContextVar[bool] = ContextVar("restoring", default=False)


@contextmanager
def restoring_weights() -> Iterator[None]:
    """Build models whose weights a checkpoint is about to replace: pretrained weights are not fetched
    (no download, no ``weights_path`` file needed to reload a checkpoint)."""
    token = _restoring.set(True)
    try:
        yield
    finally:
        _restoring.reset(token)


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


def model_setting_problems(
    arch: str,
    lr: float,
    weight_decay: float,
    optimizer: str,
    scheduler: str = "constant",
    warmup_fraction: float = 0.0,
    label_smoothing: float = 0.0,
    weights: str | None = None,
    weights_path: str | None = None,
    normalization: str | None = None,
    freeze_backbone_epochs: int = 0,
    **_other_settings: Any,
) -> list[str]:
    """What is wrong with these settings, one sentence each (used at start and by the constructor)."""
    problems = []
    for name, value in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("warmup_fraction", warmup_fraction),
        ("label_smoothing", label_smoothing),
    ):
        if not is_finite_number(value):
            problems.append(f"model.{name} must be a finite number, got {value!r}.")
    if problems:  # the range checks below compare numbers
        return problems
    if not isinstance(arch, str) or arch not in BACKBONES:
        problems.append(unknown_architecture(arch))
    if optimizer not in OPTIMIZERS:
        problems.append(f"Unknown optimizer '{optimizer}'. Choose one of: {', '.join(OPTIMIZERS)}.")
    if scheduler not in SCHEDULERS:
        problems.append(f"Unknown scheduler '{scheduler}'. Choose one of: {', '.join(SCHEDULERS)}.")
    elif scheduler == "onecycle" and not 0 < warmup_fraction < 1:
        problems.append(f"The one-cycle schedule needs 0 < model.warmup_fraction < 1, got {warmup_fraction}.")
    elif not 0 <= warmup_fraction < 1:
        problems.append(f"model.warmup_fraction must lie in [0, 1), got {warmup_fraction}.")
    if not lr > 0:
        problems.append(f"model.lr must be greater than 0, got {lr}.")
    if weight_decay < 0:
        problems.append(f"model.weight_decay must be 0 or more, got {weight_decay}.")
    if not 0 <= label_smoothing < 1:
        problems.append(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}.")
    if weights is not None and weights not in PRETRAINED:
        problems.append(f"model.weights must be null or one of {', '.join(PRETRAINED)}, got '{weights}'.")
    if weights and weights_path:
        problems.append("Set model.weights or model.weights_path, not both.")
    if weights_path is not None and not str(weights_path).strip():
        problems.append("model.weights_path is empty: give a state dict file, or null to train from scratch.")
    elif weights_path and not _restoring.get() and not Path(weights_path).expanduser().is_file():
        problems.append(f"model.weights_path: no file at {weights_path}.")
    if normalization is not None and normalization not in NORMALIZATIONS:
        problems.append(
            f"model.normalization must be null or one of {', '.join(NORMALIZATIONS)}, got '{normalization}'."
        )
    if not is_whole(freeze_backbone_epochs) or freeze_backbone_epochs < 0:
        problems.append(
            "model.freeze_backbone_epochs must be a whole number of 0 or more, "
            f"got {freeze_backbone_epochs!r}."
        )
    return problems


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BrainMRIClassifier(L.LightningModule):
    """Image classifier whose checkpoint reloads with ``BrainMRIClassifier.load_from_checkpoint(path)``.

    The model carries its input contract as hyperparameters: the class names (which output is which
    class), ``image_size`` and ``crop``; its input is a float (N, 3, image_size, image_size) batch in
    [0, 1], the grayscale repeated three times, as :func:`brain_mri.data.preprocessing.prepare_images` makes
    it, and ``normalization`` is its own first step (``imagenet`` with pretrained weights). Each
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
        crop: str = "none",
        weights: str | None = None,
        weights_path: str | None = None,
        normalization: str | None = None,
        freeze_backbone_epochs: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        scheduler: str = "constant",
        warmup_fraction: float = 0.0,
        label_smoothing: float = 0.0,
        decay_norms_and_biases: bool = True,
        channels_last: bool = True,
        cam_layer: str | None = None,
    ):
        super().__init__()
        problems = model_setting_problems(
            arch,
            lr,
            weight_decay,
            optimizer,
            scheduler,
            warmup_fraction,
            label_smoothing,
            weights,
            weights_path,
            normalization,
            freeze_backbone_epochs,
        )
        if crop not in CROPS:
            problems.append(f"crop must be one of {', '.join(CROPS)}, got '{crop}'.")
        if image_size is not None and not (is_whole(image_size) and 32 <= image_size <= MAX_IMAGE_SIZE):
            problems.append(
                f"image_size must be a whole number from 32 to {MAX_IMAGE_SIZE}, got {image_size!r}."
            )
        for name, flag in (
            ("channels_last", channels_last),
            ("decay_norms_and_biases", decay_norms_and_biases),
        ):
            if not isinstance(flag, bool):
                problems.append(f"model.{name} must be true or false, got {flag!r}.")
        if problems:
            raise BrainMRIError("\n".join(problems))
        class_names = resolve_class_names(class_names, num_classes)
        num_classes = len(class_names)
        positive_class = resolve_positive_class(class_names, positive_class)
        if normalization is None:  # pretrained weights expect the input normalised as in their training
            normalization = "imagenet" if weights or weights_path else "none"
        self.save_hyperparameters(logger=False)
        # Filled by the training task; saved with every checkpoint (see on_save_checkpoint).
        self.provenance: dict = {"precision": None, "train_sha256": [], "val_sha256": []}
        restoring = _restoring.get()
        self.net = build_backbone(
            arch, num_classes, None if restoring else weights, None if restoring else weights_path
        )
        if cam_layer:
            self.layer(cam_layer, setting="model.cam_layer")  # a wrong name stops the run before training
        if channels_last:  # NHWC convolutions are faster on current CPUs and tensor-core GPUs
            self.net = self.net.to(memory_format=torch.channels_last)
        statistics = NORMALIZATIONS[normalization] or ((0.0,) * 3, (1.0,) * 3)
        # not saved in the state dict: they follow from the hyperparameters
        self.register_buffer("input_mean", torch.tensor(statistics[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(statistics[1]).view(1, 3, 1, 1), persistent=False)
        # label smoothing regularises training; validation and test losses stay plain cross-entropy,
        # comparable between recipes
        self.train_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.add_metrics(num_classes)
        if image_size:  # the model summary's input: with it, the summary gives sizes and FLOPs
            self.example_input_array = torch.zeros(1, 3, image_size, image_size)

    def add_metrics(self, num_classes: int) -> None:
        """The loss and metric objects of every stage (shared with :class:`EnsembleClassifier`)."""
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
        if self.hparams.get("normalization", "none") != "none":
            mean, std = self.get_buffer("input_mean"), self.get_buffer("input_std")
            images = (images - mean) / std
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

    def _step(self, batch, metrics: MetricCollection, criterion: nn.Module | None = None) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = (criterion or self.criterion)(logits, labels)
        metrics.update(*self._scores(logits.detach(), labels))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics, self.train_criterion)
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
                epoch, lr = self.current_epoch, self.hparams.lr
                kept = "the best checkpoint so far is kept" if epoch else "no checkpoint was saved"
                raise BrainMRIError(
                    f"Training diverged: {name} is {loss.item()} in epoch {epoch} (lr={lr}). "
                    f"Try a smaller learning rate; {kept}."
                )

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.trainer.sanity_checking:  # a few batches, perhaps of one class: they only have to run
            images, labels = batch
            self.criterion(self(images), labels)
            return
        loss = self._step(batch, self.val_metrics)
        self.val_loss.update(loss, weight=len(batch[1]))
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def on_train_start(self) -> None:
        """``val/loss_best`` is the best of this run folder's checkpoints, not of the folder of a
        checkpoint it started from (``ckpt_path=``)."""
        if not keeps_best_checkpoints(self.trainer):
            self.val_loss_best.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_loss_best.update(self.val_loss.compute())
        # the same on every process (val/loss is synchronised); sync_dist says so to Lightning under DDP
        self.log("val/loss_best", self.val_loss_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss = self._step(batch, self.test_metrics)
        self.test_loss.update(loss, weight=len(batch[1]))
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Any:
        images, _ = batch
        return self(images).float().softmax(dim=1)

    @classmethod
    def restored(cls, checkpoint: dict, path: str | Path = "The checkpoint") -> BrainMRIClassifier:
        """A classifier built from a loaded checkpoint's hyperparameters (``checkpoints.load_checkpoint``),
        with its weights and provenance; pretrained weights are not fetched. Its hyperparameters are
        checked as command-line settings are: a damaged value is one message that names it."""
        settings = checkpoint.get("hyper_parameters")
        if not isinstance(settings, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise BrainMRIError(
                f"{path} holds no BrainMRIClassifier: its hyperparameters or weights are missing."
            )
        unknown = sorted(set(settings) - set(inspect.signature(cls.__init__).parameters))
        if unknown:
            raise BrainMRIError(f"{path} has hyperparameters a BrainMRIClassifier does not take: {unknown}.")
        try:
            with restoring_weights():
                model = cls(**settings)
        except (BrainMRIError, TypeError, ValueError) as err:
            raise BrainMRIError(f"{path} holds hyperparameters that are not valid:\n{err}") from None
        provenance = checkpoint.get("provenance", {})
        if not isinstance(provenance, dict) or provenance.get("precision") not in (None, *PRECISIONS):
            raise BrainMRIError(
                f"{path} holds a damaged record of its training (provenance): {provenance!r:.200}."
            )
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise BrainMRIError(
                f"The checkpoint's weights do not fit a {model.hparams.arch} with "
                f"{model.hparams.num_classes} classes: {str(err).splitlines()[0]}"
            ) from None
        model.on_load_checkpoint(checkpoint)
        return model

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: str | torch.device | None = None, **overrides: Any
    ) -> BrainMRIClassifier:
        """Lightning's call, through the project's one safe loader: ``weights_only=True`` (a file that would
        run code is refused), CRC-32 checksums (a damaged file is refused, never loaded as wrong weights),
        hyperparameters checked as settings; ``overrides`` replace saved hyperparameters."""
        checkpoint = load_checkpoint(checkpoint_path)
        checkpoint["hyper_parameters"] = {**checkpoint.get("hyper_parameters", {}), **overrides}
        model = cls.restored(checkpoint, checkpoint_path)
        return model.to(map_location) if map_location is not None else model

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

    def layer(self, name: str, setting: str = "cam_layer") -> nn.Module:
        """The network's module ``name`` (e.g. ``layer4``); ``setting`` names it in the error message."""
        try:
            return self.net.get_submodule(name)
        except AttributeError as err:
            raise BrainMRIError(f"{setting}={name}: {self.hparams.arch} has no such module ({err}).") from err

    def start_from(self, checkpoint: dict, path: str) -> bool:
        """Copy a checkpoint's network weights into this model (``init_from=``), nothing else: the
        architecture must match (settings.check_initial_weights says so at start); where the classes
        differ, the head keeps its fresh initialisation. Returns whether the head was replaced."""
        saved = checkpoint["hyper_parameters"]
        arch = self.hparams.arch
        weights = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        saved_classes = resolve_class_names(saved.get("class_names"), saved.get("num_classes"))
        own_classes = list(self.hparams.class_names)
        head = BACKBONES[arch].head + "."
        replace_head = saved_classes != own_classes
        if replace_head:
            weights = {k: v for k, v in weights.items() if not k.startswith(head)}
        try:
            missing, unexpected = self.net.load_state_dict(weights, strict=False)
        except RuntimeError as err:
            raise BrainMRIError(
                f"init_from={path}: its weights do not fit this {arch} ({str(err).splitlines()[0]})."
            ) from None
        if unexpected or any(not (replace_head and name.startswith(head)) for name in missing):
            raise BrainMRIError(
                f"init_from={path}: its weights do not fit this {arch} (missing: {missing[:3]}, "
                f"unexpected: {unexpected[:3]})."
            )
        if replace_head:
            log.info(
                "Starting from the weights of %s; its classes %s differ from this data's %s, so the head "
                "(%s) starts anew.",
                path,
                saved_classes,
                own_classes,
                head[:-1],
            )
        else:
            log.info("Starting from the weights of %s (classes %s).", path, own_classes)
        return replace_head

    @property
    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every weight but the classification head's."""
        head = BACKBONES[self.hparams.arch].head + "."
        return [p for name, p in self.net.named_parameters() if not name.startswith(head)]

    def on_train_epoch_start(self) -> None:
        """Frozen warm-up: for the first ``freeze_backbone_epochs`` epochs only the head learns (the
        backbone gets no gradients and keeps its batch-norm statistics). The parameters stay in the
        optimizer throughout, so the learning-rate schedule and parameter groups are never rebuilt."""
        frozen = self.current_epoch < self.hparams.get("freeze_backbone_epochs", 0)
        if frozen and self.current_epoch == 0:
            log.info(
                "Backbone frozen for %d epoch(s): only the head learns", self.hparams.freeze_backbone_epochs
            )
        for parameter in self.backbone_parameters:
            parameter.requires_grad_(not frozen)
        if frozen:
            self.net.eval()
            self.net.get_submodule(BACKBONES[self.hparams.arch].head).train()
        elif self.hparams.get("freeze_backbone_epochs", 0):
            self.net.train()  # Lightning would keep the mode the frozen epochs left

    def parameter_groups(self) -> list[dict]:
        """One group, or (``decay_norms_and_biases=False``) weight decay only on weight matrices and
        kernels: biases and normalisation scales (one-dimensional) are not pulled towards zero."""
        hp = self.hparams
        if hp.get("decay_norms_and_biases", True):
            return [{"params": list(self.parameters()), "weight_decay": hp.weight_decay}]
        decayed = [p for p in self.parameters() if p.ndim > 1]
        other = [p for p in self.parameters() if p.ndim <= 1]
        return [{"params": decayed, "weight_decay": hp.weight_decay}, {"params": other, "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = OPTIMIZERS[hp.optimizer](self.parameter_groups(), hp.lr, hp.weight_decay)
        scheduler = hp.get("scheduler", "constant")
        if scheduler == "constant":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        if scheduler == "onecycle":
            schedule: Any = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=hp.lr, total_steps=steps, pct_start=hp.warmup_fraction
            )
        else:
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, partial(warmup_cosine, warmup=round(hp.warmup_fraction * steps), total=steps)
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear up to 1 over ``warmup`` steps, then a cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
