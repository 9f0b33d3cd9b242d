"""Averaging models and views: an ensemble of checkpoints (e.g. the folds of a cross-validation) and
test-time augmentation, tested and predicted exactly like one model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn

from brain_mri.errors import BrainMRIError
from brain_mri.models.classifier import BrainMRIClassifier

log = logging.getLogger(__name__)

# What a model and its ensemble partners must share: which output is which class, and how images are
# prepared for it (normalisation is each model's own first step, so it may differ).
INPUT_CONTRACT = ("class_names", "positive_class", "image_size", "crop")
VIEWS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "none": (lambda images: images,),
    "flip": (lambda images: images, lambda images: images.flip(-1)),  # left-right mirror
}


def contract_of(model: BrainMRIClassifier) -> dict:
    hparams = model.hparams
    return {key: hparams.get(key, "none" if key == "crop" else None) for key in INPUT_CONTRACT}


class EnsembleClassifier(BrainMRIClassifier):
    """The mean probability over ``members`` x views (``tta``: ``none`` or ``flip``).

    Its ``forward`` returns the log of the mean probability, so that the loss, metrics and predictions of
    :class:`BrainMRIClassifier` apply unchanged; ``predict_step`` also returns the spread (standard
    deviation over members and views) of the probability of the predicted class. Not trained, not saved.
    """

    def __init__(self, members: Sequence[BrainMRIClassifier], tta: str = "none", names: Sequence[str] = ()):
        L.LightningModule.__init__(self)
        if tta not in VIEWS:
            raise BrainMRIError(f"eval.tta must be one of {', '.join(VIEWS)}, got '{tta}'.")
        contracts = [contract_of(member) for member in members]
        for name, contract in zip(names or range(len(members)), contracts, strict=True):
            if contract != contracts[0]:
                differs = {
                    k: (contracts[0][k], contract[k])
                    for k in INPUT_CONTRACT
                    if contract[k] != contracts[0][k]
                }
                raise BrainMRIError(
                    f"Cannot average models with different classes or inputs: {name} differs from the "
                    f"first in {differs} (first, this)."
                )
        self.save_hyperparameters({**dict(members[0].hparams), "tta": tta, "members": len(members)})
        self.members = nn.ModuleList(members)
        self.views = VIEWS[tta]
        trained_in = {member.provenance["precision"] for member in members}
        if len(trained_in) > 1:
            log.warning(
                "The members were trained in %s: averaging them in 32-true.", ", ".join(sorted(trained_in))
            )
        self.provenance = {
            # members of several precisions: the most precise, so none is evaluated below its training
            "precision": trained_in.pop() if len(trained_in) == 1 else "32-true",
            "train_sha256": sorted({h for m in members for h in m.provenance["train_sha256"]}),
            "val_sha256": sorted({h for m in members for h in m.provenance["val_sha256"]}),
        }
        self.add_metrics(len(self.hparams.class_names))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(members x views, N, classes): every member's probabilities for every view."""
        return torch.stack(
            [member(view(images)).float().softmax(dim=1) for member in self.members for view in self.views]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.probabilities(images).mean(dim=0).clamp_min(1e-12).log()

    def predict_step(
        self, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, _ = batch
        each = self.probabilities(images)
        mean = each.mean(dim=0)
        predicted = mean.argmax(dim=1)
        of_predicted = each.gather(2, predicted.view(1, -1, 1).expand(len(each), -1, 1)).squeeze(2)
        return mean, of_predicted.std(dim=0, correction=0)
