"""BrainMRIDataModule: scan, decode once, group duplicates, split, and serve uint8 tensors in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from brain_mri.data.download import ensure_dataset
from brain_mri.data.duplicates import DEFAULT_THRESHOLD, content_fingerprint, duplicate_groups
from brain_mri.data.images import (
    DecodeCache,
    DecodedImages,
    ImageFile,
    decode_images,
    discover_classes,
    scan_image_files,
)
from brain_mri.data.split import (
    PARTITIONS,
    check_groups_have_one_class,
    data_fingerprint,
    grouped_stratified_split,
    partitions_for_fold,
    read_split,
    split_rows,
)
from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.errors import BrainMRIError
from brain_mri.run_outputs import SPLIT_FILE

log = logging.getLogger(__name__)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float (B, 3, H, W) in [0, 1]: the study's grayscale repeated to 3 channels."""
    return images.float().div_(255.0).expand(-1, 3, -1, -1)


def augment_batch(
    images: torch.Tensor, max_degrees: float = 10.0, max_shift: float = 0.05, max_zoom: float = 0.1
) -> torch.Tensor:
    """Random left-right flip, rotation, shift and scale of every image of a float batch, in one
    ``grid_sample`` call on the batch's device (no per-image Python work)."""
    count = len(images)
    angle = torch.empty(count, device=images.device).uniform_(-max_degrees, max_degrees).deg2rad()
    scale = torch.empty(count, device=images.device).uniform_(1 - max_zoom, 1 + max_zoom)
    flip = torch.where(torch.rand(count, device=images.device) < 0.5, -1.0, 1.0)
    shift = torch.empty(count, 2, device=images.device).uniform_(-2 * max_shift, 2 * max_shift)
    theta = torch.zeros(count, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 1] = flip * angle.cos() / scale, -angle.sin() / scale
    theta[:, 1, 0], theta[:, 1, 1] = flip * angle.sin() / scale, angle.cos() / scale
    theta[:, :, 2] = shift
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


class IndexedBatches(Dataset):
    """Serves whole batches by indexing the in-memory tensor with a list of indices: no per-item work."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        return self.images[indices], self.labels[indices]


class EpochBatches(Sampler[list[int]]):
    """Batches of indices; when shuffling, the order depends only on (seed, epoch).

    The epoch is asked from the trainer when an epoch's first batch is drawn, so a run resumed from a
    checkpoint sees exactly the batches an uninterrupted run would have seen. Under DDP each process takes
    its own share; evaluation shares are not padded, so metrics count every image exactly once.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int, epoch, shard):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch: Callable[[], int] = epoch
        self.shard: Callable[[], tuple[int, int]] = shard

    def _batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        rank, world = self.shard()
        if world > 1:  # every world-th image; in training all processes get the same number of batches
            order = order[: len(order) - len(order) % world] if self.shuffle else order
            order = order[rank::world]
        batches = list(order.split(self.batch_size))
        if self.shuffle and len(batches) > 1 and len(batches[-1]) == 1:
            batches.pop()  # a lone last training image breaks batch norm
        return batches

    def __iter__(self):
        # A generator: the order is drawn at the first batch, when a resumed trainer knows its epoch.
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._batches())


class BrainMRIDataModule(L.LightningDataModule):
    """Owns the data set, its leak-free split and the batch transforms; writes nothing but the decode cache.

    Images are decoded and resized once, kept in memory as uint8, and turned into float 3-channel
    batches on the device (``on_after_batch_transfer``). The tasks write ``split.csv`` (``split_table``)
    and ``bad_images.csv`` (``bad_files``) from the rank-zero process.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 100,
        batch_size: int = 25,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 42,
        num_folds: int = 0,
        fold: int = 0,
        split_file: str | None = None,
        class_names: list[str] | None = None,
        class_map: dict[str, str] | None = None,
        duplicate_threshold: float = DEFAULT_THRESHOLD,
        on_bad_image: str = "error",
        min_image_size: int = 32,
        cache_dir: str | None = None,
        augment: bool = False,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        download: bool = False,
        synthetic: bool = False,
        synthetic_per_class: int = 40,
    ):
        super().__init__()
        if image_size < 32:
            raise BrainMRIError(f"data.image_size must be at least 32 pixels, got {image_size}.")
        if on_bad_image not in ("error", "skip"):
            raise BrainMRIError(f"data.on_bad_image must be 'error' or 'skip', got '{on_bad_image}'.")
        if batch_size < 1:
            raise BrainMRIError(f"data.batch_size must be at least 1, got {batch_size}.")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction <= 1 and val_fraction + test_fraction <= 1):
            raise BrainMRIError(
                f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) "
                "must lie in [0, 1] and sum to at most 1."
            )
        if num_folds == 1 or num_folds < 0 or (num_folds >= 2 and not 0 <= fold < num_folds):
            raise BrainMRIError(
                f"Cross-validation needs data.num_folds >= 2 and 0 <= data.fold < num_folds "
                f"(got num_folds={num_folds}, fold={fold}); num_folds=0 turns it off."
            )
        self.save_hyperparameters(logger=False)
        self.hparams.root = str(Path(root).expanduser().resolve())
        # plain Python values: hyperparameters are saved in checkpoints, which must load with weights_only
        self.hparams.class_names = [str(c) for c in class_names] if class_names else None
        self.hparams.class_map = {str(k): str(v) for k, v in class_map.items()} if class_map else None
        self.files: list[ImageFile] = []
        self.partitions: list[str] = []
        self.class_names: list[str] = []
        self.bad_files: list[tuple[str, str]] = []
        self.images: torch.Tensor | None = None
        self._decoded: DecodedImages | None = None

    @classmethod
    def for_evaluation(
        cls,
        ckpt_path: str,
        trained: dict | None,
        class_names: list[str],
        on: str = "test",
        root: str | None = None,
        split_file: str | None = None,
        class_map: dict[str, str] | None = None,
        on_bad_image: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> BrainMRIDataModule:
        """The data a checkpoint is tested on, prepared exactly as in training (root, image size, what to
        do with unreadable files), labelled by the model's ``class_names``.

        ``on="test"``: the test partition of the run's ``split.csv`` (or of ``split_file``);
        ``on="all"``: every image under ``root`` (default: the training data root).
        """
        if not trained:
            raise BrainMRIError(f"{ckpt_path} holds no data settings: was it written by train.py?")
        if on not in ("test", "all"):
            raise BrainMRIError(f"eval.on must be 'test' or 'all', got '{on}'.")
        settings = {
            "root": root or trained["root"],
            "image_size": trained["image_size"],
            "duplicate_threshold": trained["duplicate_threshold"],
            "on_bad_image": on_bad_image or trained.get("on_bad_image", "error"),
            "min_image_size": trained.get("min_image_size", 1),
            "class_names": class_names,
            "class_map": class_map,
            "batch_size": batch_size,
            "num_workers": num_workers,
        }
        if on == "all":
            return cls(**settings, val_fraction=0.0, test_fraction=1.0)
        split_file = Path(split_file or Path(ckpt_path).resolve().parent.parent / SPLIT_FILE)
        if not split_file.is_file():
            raise BrainMRIError(
                f"No split file at {split_file}: pass data.split_file=<run>/split.csv, or evaluate every "
                "image of a folder the model was not trained on with eval.on=all data.root=<folder>."
            )
        return cls(**settings, split_file=str(split_file))

    @property
    def root(self) -> Path:
        return Path(self.hparams.root)

    def prepare_data(self) -> None:
        """Lightning calls this in one process per machine once the processes exist: it fills the decode
        cache with what this process decoded, so parallel processes never all write the same entries."""
        if self.images is None:
            self._load_and_split()
        if self._decoded is not None and self.hparams.cache_dir:
            self._decoded.save_to(self._cache())
            self._decoded = None

    def _cache(self) -> DecodeCache:
        return DecodeCache(self.hparams.cache_dir, self.hparams.image_size)

    def setup(self, stage: str | None = None) -> None:
        """Scan, decode, group and split once; later calls (every Trainer stage) reuse the result."""
        if self.images is None:
            self._load_and_split()
        needed = ("test",) if stage in ("test", "predict") else PARTITIONS
        empty = [p for p in needed if not len(self.partition_indices(p))]
        if empty:
            raise BrainMRIError(
                f"The {' and '.join(empty)} partition(s) would be empty with {len(self.files)} images "
                f"(data.val_fraction={self.hparams.val_fraction}, "
                f"data.test_fraction={self.hparams.test_fraction}, data.num_folds={self.hparams.num_folds}): "
                "use larger fractions or more images."
            )

    def _load_and_split(self) -> None:
        if self.hparams.synthetic:
            generate_phantom_dataset(self.root, per_class=self.hparams.synthetic_per_class)
        ensure_dataset(self.root, download=self.hparams.download)
        cache = self._cache() if self.hparams.cache_dir else None
        hp = self.hparams
        files = scan_image_files(self.root, hp.class_names, hp.class_map)
        self.class_names = hp.class_names or discover_classes(self.root)
        decoded = decode_images(
            self.root, files, hp.image_size, content_fingerprint, cache, min_size=hp.min_image_size
        )
        if decoded.notes:
            listing = "\n".join(f"  {path}: {note}" for path, note in decoded.notes)
            log.warning("%d image(s) to know about:\n%s", len(decoded.notes), listing)
        self._decoded = decoded
        log.info(
            "Read %d files: %d decoded, %d from the cache",
            len(files),
            len(decoded.fresh),
            len(decoded.readable) - len(decoded.fresh),
        )
        if cache is not None and cache.damaged:
            log.warning("%d damaged decode-cache entries were decoded again and rewritten.", cache.damaged)
        self._handle_bad_images(decoded.bad)
        files, pixels, hashes = decoded.readable, decoded.pixels, decoded.sha256
        if self.hparams.split_file:
            files, pixels, hashes, partitions, folds, groups = self._apply_saved_split(files, pixels, hashes)
        else:
            groups = duplicate_groups(decoded.fingerprints, self.hparams.duplicate_threshold)
            check_groups_have_one_class(files, groups)
            labels = np.array([f.label for f in files])
            partitions, folds = grouped_stratified_split(
                labels, groups, hp.val_fraction, hp.test_fraction, hp.split_seed, hp.num_folds, hp.fold
            )
        self.files, self.partitions = files, partitions
        self.images = torch.from_numpy(pixels).unsqueeze(1)
        self.split_table = split_rows(files, partitions, folds, groups, hashes)
        counts = {p: self.partition_indices(p).size for p in PARTITIONS}
        log.info(
            "Data: %d images in %d duplicate groups from %s; split %s",
            len(files),
            len(set(groups.tolist())),
            self.root,
            counts,
        )

    @property
    def data_fingerprint(self) -> str:
        """One hash for the exact set of files (paths and contents) the split uses."""
        return data_fingerprint(self.split_table)

    def _handle_bad_images(self, bad: list[tuple[str, str]]) -> None:
        """Stop and list every unreadable file, or (``on_bad_image=skip``) warn and keep them in
        ``bad_files`` for the task to record."""
        if not bad:
            return
        listing = "\n".join(f"  {path}: {reason}" for path, reason in bad)
        if self.hparams.on_bad_image != "skip":
            raise BrainMRIError(
                f"{len(bad)} file(s) under {self.root} cannot be read as images:\n{listing}\n"
                "Fix or remove them, or skip them with data.on_bad_image=skip."
            )
        log.warning("Skipping %d unreadable file(s):\n%s", len(bad), listing)
        self.bad_files = bad

    def _apply_saved_split(self, files: list[ImageFile], pixels: np.ndarray, hashes: list[str]):
        """Reuse a saved split exactly: same files with the same contents, partitions, folds and groups
        (another ``fold`` may be chosen as validation when the saved split has folds)."""
        rows = read_split(Path(self.hparams.split_file))
        position = {f.path: i for i, f in enumerate(files)}
        missing = [r["path"] for r in rows if r["path"] not in position]
        changed = [
            r["path"] for r in rows if r["path"] in position and hashes[position[r["path"]]] != r["sha256"]
        ]
        if missing or changed:
            raise BrainMRIError(
                f"The images under {self.root} no longer match the split {self.hparams.split_file}: "
                f"{len(missing)} missing, {len(changed)} changed since it was written "
                f"({', '.join((missing + changed)[:10])}). Refusing to use a different set of images."
            )
        order = [position[r["path"]] for r in rows]
        chosen = [files[i] for i in order]
        relabelled = [r for r, f in zip(rows, chosen, strict=True) if int(r["label"]) != f.label]
        if relabelled:
            raise BrainMRIError(
                f"The split {self.hparams.split_file} gives other classes than the folders for: "
                + ", ".join(r["path"] for r in relabelled[:10])
            )
        groups = np.array([int(r["group"]) for r in rows])
        folds = [int(r["fold"]) for r in rows]
        partitions = [r["partition"] for r in rows]
        if self.hparams.num_folds:
            if max(folds) + 1 != self.hparams.num_folds:
                raise BrainMRIError(
                    f"The split {self.hparams.split_file} has {max(folds) + 1} folds, "
                    f"not data.num_folds={self.hparams.num_folds}."
                )
            partitions = partitions_for_fold(rows, self.hparams.fold)
        return chosen, pixels[order], [hashes[i] for i in order], partitions, folds, groups

    def partition_indices(self, partition: str) -> np.ndarray:
        return np.flatnonzero(np.array(self.partitions) == partition)

    def partition_files(self, partition: str) -> list[ImageFile]:
        return [self.files[i] for i in self.partition_indices(partition)]

    def partition_hashes(self, partition: str) -> list[str]:
        """Content hashes (sha256) of a partition's images, as in ``split.csv``."""
        return [self.split_table[i]["sha256"] for i in self.partition_indices(partition)]

    def partition_loader(self, partition: str, shuffle: bool = False, sharded: bool = True) -> DataLoader:
        """Batches of one partition; ``sharded=False`` gives every image to this process, even under DDP."""
        indices = torch.from_numpy(self.partition_indices(partition))
        labels = torch.tensor([f.label for f in self.files])
        dataset = IndexedBatches(self.images[indices], labels[indices])
        shard = self._shard if sharded else lambda: (0, 1)
        sampler = EpochBatches(
            len(dataset),
            self.hparams.batch_size,
            shuffle,
            torch.initial_seed(),
            epoch=self._current_epoch,
            shard=shard,
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.hparams.num_workers,
            pin_memory=self._pin_memory(),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def _shard(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _pin_memory(self) -> bool:
        """Pinned host memory lets batches reach a CUDA device with non-blocking copies."""
        if self.hparams.pin_memory is not None:
            return self.hparams.pin_memory
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return self.partition_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.partition_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.partition_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test partition, whole in every process: predictions are written by one process."""
        return self.partition_loader("test", sharded=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        images = to_model_input(images)
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            images = augment_batch(images)
        return images, labels
