"""Grad-CAM: the heat map points at the lesion the phantom generator placed; overlays from predict.py."""

import csv
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image
from test_models import compose_train

from brain_mri.data.synthetic import LESIONS_FILE, generate_phantom_dataset
from brain_mri.errors import BrainMRIError
from brain_mri.explain import OVERLAY_SIZE, grad_cam
from brain_mri.models import BrainMRIClassifier, EnsembleClassifier
from brain_mri.models.backbones import BACKBONES
from brain_mri.predict import predict
from brain_mri.preprocessing import prepare_images
from brain_mri.run_outputs import read_csv, read_json
from brain_mri.train import train
from helpers import FAST_TRAINING, built_once, compose_task

SIZE = 160  # ResNet-18's last feature map is 5x5 here


@pytest.fixture(scope="session")
def lesion_phantoms(tmp_path_factory) -> Path:
    return built_once(
        tmp_path_factory, "lesions", lambda root: generate_phantom_dataset(root, per_class=16, size=SIZE)
    )


@pytest.fixture(scope="session")
def lesion_checkpoint(tmp_path_factory, lesion_phantoms) -> str:
    """ResNet-18 trained on 160-pixel phantoms until it tells them apart (4 epochs of 7 batches of 4,
    fp32): its best checkpoint. (Fewer steps leave the batch-norm statistics unsettled and the best epoch
    the first, whose maps follow brightness, not lesions: 8 images a batch gave 0 of 18 peaks inside.)"""

    def train_once(run: Path) -> None:
        overrides = [
            *FAST_TRAINING,
            f"data.root={lesion_phantoms}",
            f"data.image_size={SIZE}",
            "data.batch_size=4",
            "trainer.max_epochs=4",
            "trainer.precision=32-true",
        ]
        train(compose_task("train", run, *overrides))

    run = built_once(tmp_path_factory, "lesion_run", train_once)
    return read_json(run / "metrics.json")["best_checkpoint"]


@pytest.fixture
def lesion_model(lesion_checkpoint) -> BrainMRIClassifier:
    return BrainMRIClassifier.load_from_checkpoint(lesion_checkpoint)


def lesions(root: Path) -> list[dict]:
    with open(root / LESIONS_FILE) as table:
        return list(csv.DictReader(table))


def peaks_inside(maps: torch.Tensor, where: list[dict]) -> int:
    """How many maps have their maximum inside the lesion (centre and radius as fractions of the width)."""
    inside = 0
    for heat, lesion in zip(maps, where, strict=True):
        row, column = divmod(int(heat.argmax()), heat.shape[1])
        x, y = (column + 0.5) / heat.shape[1], (row + 0.5) / heat.shape[0]
        inside += (x - float(lesion["x"])) ** 2 + (y - float(lesion["y"])) ** 2 <= float(
            lesion["radius"]
        ) ** 2
    return inside


def test_the_heat_map_peaks_inside_the_lesion(lesion_model, lesion_phantoms):
    where = lesions(lesion_phantoms)
    assert len(where) == 18  # every positive phantom, the two planted copies included
    images = prepare_images([lesion_phantoms / w["path"] for w in where], SIZE, "none")
    tumour = torch.full((len(where),), lesion_model.hparams.class_names.index("yes"))
    maps = grad_cam(lesion_model, images, tumour)
    peaks = maps.amax(dim=(1, 2))
    assert maps.shape == (len(where), SIZE, SIZE) and maps.min() >= 0 and (peaks.eq(1) | peaks.eq(0)).all()
    # most peaks (13 of 18 here) fall inside the lesion; a 5x5 map places its peak only to within half a
    # cell (0.1 of the width), so small lesions may be missed
    assert peaks_inside(maps, where) > 0.5 * len(where)
    # mirrored views are mapped back: an ensemble with flip points at the same lesions
    mirrored = grad_cam(EnsembleClassifier([lesion_model, lesion_model], tta="flip"), images, tumour)
    assert peaks_inside(mirrored, where) > 0.5 * len(where)
    assert peaks_inside(maps.flip(-1), where) < 0.3 * len(where)  # a map left mirrored would miss


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_model_config_names_a_layer_after_the_last_convolution(arch):
    """Grad-CAM's layer: every convolution has run when it returns, and its output is still a map."""
    model = hydra.utils.instantiate(compose_train(f"model={arch}").model, class_names=["no", "yes"])
    order: list[tuple[str, tuple]] = []
    for name, module in model.net.named_modules():
        if isinstance(module, torch.nn.Conv2d) or name == model.hparams.cam_layer:
            module.register_forward_hook(lambda m, i, out, name=name: order.append((name, out.shape)))
    maps = grad_cam(model, torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))
    names = [name for name, _ in order]
    assert names.index(model.hparams.cam_layer) == len(names) - 1  # no convolution after it
    assert len(order[-1][1]) == 4 and order[-1][1][-1] >= 2  # a spatial map (2x2 or more at 64 px)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()


def test_an_unknown_layer_is_refused_when_the_model_is_built():
    with pytest.raises(BrainMRIError, match=r"model\.cam_layer=layer9: resnet18 has no such module"):
        BrainMRIClassifier(class_names=["no", "yes"], cam_layer="layer9")


def test_predict_writes_an_overlay_per_image(lesion_checkpoint, lesion_phantoms, tmp_path):
    scans = tmp_path / "scans"
    for lesion in lesions(lesion_phantoms)[:4]:
        target = scans / "patient" / Path(lesion["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((lesion_phantoms / lesion["path"]).read_bytes())
    out = tmp_path / "out"
    predict(compose_task("predict", out, f"ckpt_path={lesion_checkpoint}", f"input={scans}", "explain=true"))
    rows = read_csv(out / "predictions.csv")
    assert [r["explanation"] for r in rows] == [
        f"explanations/patient/{Path(w['path']).name}.png" for w in lesions(lesion_phantoms)[:4]
    ]
    picture = np.asarray(Image.open(out / rows[0]["explanation"]))
    assert picture.shape[0] > OVERLAY_SIZE and picture.shape[1:] == (
        OVERLAY_SIZE,
        3,
    )  # a caption strip on top
    colourful = np.abs(picture[40:, :, 0].astype(int) - picture[40:, :, 2]).max()
    assert colourful > 100  # the heat map's colours over the gray slice


def test_a_checkpoint_saved_without_a_layer_is_explained_on_the_layer_given(lesion_model, lesion_phantoms):
    images = prepare_images([lesion_phantoms / w["path"] for w in lesions(lesion_phantoms)[:2]], SIZE, "none")
    targets = torch.tensor([1, 1])
    own = grad_cam(lesion_model, images, targets)
    lesion_model.hparams.cam_layer = None  # as in checkpoints saved before cam_layer was recorded
    with pytest.raises(BrainMRIError, match=r"pass cam_layer=<module>, as conf/model/resnet18\.yaml"):
        grad_cam(lesion_model, images, targets)
    assert torch.equal(grad_cam(lesion_model, images, targets, "layer4"), own)
    with pytest.raises(BrainMRIError, match="cam_layer=layer9: resnet18 has no such module"):
        grad_cam(lesion_model, images, targets, "layer9")
    with pytest.raises(BrainMRIError, match=r"cam_layer=fc: its output is not a feature map \(N, C, H, W\)"):
        grad_cam(lesion_model, images, targets, "fc")
