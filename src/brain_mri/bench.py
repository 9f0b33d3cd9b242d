"""Training throughput benchmark: ``python -m brain_mri.bench`` (not a test; run it on an idle machine).

In one process, for one model, image size, batch size and precision, it times optimizer steps of
(a) the project's pipeline: BrainMRIDataModule + BrainMRIClassifier + Trainer, timed inside the run;
(b) a bare PyTorch loop over the same model on random tensors, same precision and memory format;
(c) the original study's style: PIL decode and resize in ``__getitem__``, fp32, contiguous tensors;
and prediction throughput of the pipeline's model through ``Trainer.predict`` (on the accelerator, at the
precision), alone and as an ensemble of ``--ensemble`` such models with ``--tta`` views, as
``eval.py ckpt_path=<sweep folder> eval.tta=flip`` predicts; and ``predict.py``'s path from image files
(read, prepare, predict), without and with Grad-CAM overlays (``explain=true``). All on the same
device. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.folder import scan_image_files
from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.hardware import autocast, best_precision
from brain_mri.models import BrainMRIClassifier, EnsembleClassifier
from brain_mri.models.explain import overlay
from brain_mri.models.inference import predict_files

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "model"  # run from a clone of the project


class StepTimer(L.Callback):
    """Wall time of the training (or prediction) batches after ``warmup`` batches, measured inside the
    Trainer's loop; ``images`` counts the images of the timed batches."""

    def __init__(self, warmup: int):
        self.warmup, self.images = warmup, 0
        self.started: float | None = None
        self.finished: float | None = None

    def _start(self, batch_idx: int) -> None:
        if batch_idx == self.warmup and self.started is None:
            self.started = time.perf_counter()

    def _end(self, batch) -> None:
        if self.started is not None:
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            self.images += len(batch[1])
            self.finished = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start(trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._end(batch)

    def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start(batch_idx)

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._end(batch)

    @property
    def rate(self) -> float:
        assert self.started is not None and self.finished is not None, "nothing was timed"
        return self.images / (self.finished - self.started)


def timed_trainer(precision: Any, timer: StepTimer, **settings) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        precision=precision,
        accelerator="auto",
        devices=1,
        **settings,
    )


def pipeline(root: Path, args, precision: str) -> tuple[StepTimer, BrainMRIClassifier]:
    datamodule = BrainMRIDataModule(
        str(root), image_size=args.image_size, batch_size=args.batch_size, cache_dir=None
    )
    model = BrainMRIClassifier(
        arch=args.model,
        channels_last=args.channels_last,
        image_size=args.image_size,
        cam_layer=OmegaConf.load(MODEL_CONFIGS / f"{args.model}.yaml").cam_layer,  # as train.py builds it
    )
    timer = StepTimer(args.warmup)
    settings = {"max_steps": args.warmup + args.steps, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    timed_trainer(precision, timer, **settings).fit(model, datamodule=datamodule)
    return timer, model


def bare_loop(args, precision: str, channels_last: bool) -> float:
    """Forward, backward and Adam on random tensors: what the model costs with no framework around it
    (with a gradient scaler in fp16, as Lightning's ``16-mixed`` has)."""
    model = BrainMRIClassifier(arch=args.model, channels_last=channels_last).net.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(DEVICE, enabled=precision.startswith("16"))
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=DEVICE)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (args.batch_size,), device=DEVICE)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            started = time.perf_counter()
        with autocast(precision, DEVICE):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - started)


class StudyStyleImages(Dataset):
    """The original study's data path: open, convert and resize every image each time it is drawn."""

    def __init__(self, root: Path, size: int):
        self.items = [(root / f.path, f.label) for f in scan_image_files(root)]
        self.size = size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        image = Image.open(path).convert("L").convert("RGB").resize((self.size, self.size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return pixels, label


def study_style(root: Path, args) -> float:
    model = BrainMRIClassifier(arch=args.model, channels_last=False).net.to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(StudyStyleImages(root, args.image_size), batch_size=args.batch_size, shuffle=True)
    step, images_done = 0, 0
    while step < args.warmup + args.steps:
        for images, labels in loader:
            if step == args.warmup:
                started = time.perf_counter()
            images, labels = images.to(DEVICE), labels.to(DEVICE)
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images_done += len(labels) if step >= args.warmup else 0
            step += 1
            if step == args.warmup + args.steps:
                break
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return images_done / (time.perf_counter() - started)


def prediction(model: BrainMRIClassifier, args, precision: str) -> StepTimer:
    """``Trainer.predict`` over batches of random images, as evaluation predicts."""
    count = (args.warmup + args.steps) * args.batch_size
    images = torch.rand(count, 3, args.image_size, args.image_size)
    batches = DataLoader(
        TensorDataset(images, torch.zeros(count, dtype=torch.long)), batch_size=args.batch_size
    )
    timer = StepTimer(args.warmup)
    timed_trainer(precision, timer).predict(model, batches, return_predictions=False)
    return timer


def file_prediction(
    model: BrainMRIClassifier, files: list[Path], args, precision: str, explain: bool | str
) -> float:
    """Images per second of :func:`brain_mri.models.inference.predict_files` over image files, and with
    ``explain`` (a method) the overlay PNGs too (in memory), as ``predict.py explain=`` writes them."""
    predict_files(model, files[: args.batch_size], precision=precision, progress=False)  # warm-up
    started = time.perf_counter()
    for found in predict_files(
        model, files, args.batch_size, precision=precision, progress=False, explain=explain
    ):
        if found.heat_map is not None:
            overlay(found.pixels, found.heat_map, "yes 0.99").save(io.BytesIO(), format="PNG")
    return len(files) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m brain_mri.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument(
        "--precision", default="auto", help="auto (the training default), 32-true, bf16-mixed"
    )
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data-root", type=Path, help="image folders (default: a generated phantom set)")
    parser.add_argument("--ensemble", type=int, default=5, help="models in the timed ensemble (default 5)")
    parser.add_argument("--tta", default="flip", help="views of the timed ensemble: none or flip")
    args = parser.parse_args(argv)
    precision = best_precision() if args.precision == "auto" else args.precision
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.data_root or generate_phantom_dataset(Path(scratch) / "phantoms", per_class=100, size=256)
        trained, model = pipeline(root, args, precision)
        bare_rate = bare_loop(args, precision, args.channels_last)
        study_rate = study_style(root, args)
        files = [root / f.path for f in scan_image_files(root)]
        model = model.to("cpu")  # predict.py predicts on the CPU
        files_rate = file_prediction(model, files, args, precision, explain=False)
        explained_rate = file_prediction(model, files, args, precision, explain="grad_cam")
    predicted = prediction(model, args, precision)
    members = [model] + [BrainMRIClassifier(**model.hparams) for _ in range(args.ensemble - 1)]
    ensemble = prediction(EnsembleClassifier(members, args.tta), args, precision)
    pipeline_rate = trained.rate
    result = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": precision,
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "pipeline_img_s": round(pipeline_rate, 2),
        "bare_loop_img_s": round(bare_rate, 2),
        "study_style_img_s": round(study_rate, 2),
        "pipeline_over_bare": round(pipeline_rate / bare_rate, 3),
        "pipeline_over_study": round(pipeline_rate / study_rate, 3),
        "predict_img_s": round(predicted.rate, 2),
        f"ensemble_{args.ensemble}_tta_{args.tta}_predict_img_s": round(ensemble.rate, 2),
        "predict_files_img_s": round(files_rate, 2),
        "predict_files_grad_cam_img_s": round(explained_rate, 2),
        "timed_images": {
            "pipeline": trained.images,
            "predict": predicted.images,
            "ensemble": ensemble.images,
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
