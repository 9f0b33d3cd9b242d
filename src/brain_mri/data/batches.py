"""Stage 4, the batches: BrainMRIDataModule builds the index and the split of its settings and serves
uint8 batches of them; the device turns them into the model's input. It writes nothing but the decode
cache; the tasks write ``split.csv`` and ``bad_images.csv`` from the rank-zero process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from brain_mri.data.download import ensure_dataset
from brain_mri.data.duplicates import DEFAULT_THRESHOLD
from brain_mri.data.folder import ImageFile
from brain_mri.data.index import DecodedSet, ImageIndex, build_index, list_files
from brain_mri.data.manifest import read_manifest
from brain_mri.data.preprocessing import CROPS, to_model_input
from brain_mri.data.split import (
    PARTITIONS,
    Split,
    data_fingerprint,
    load_split,
    make_split,
    read_split,
    split_rows,
)
from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.errors import BrainMRIError

log = logging.getLogger(__name__)


class IndexedBatches(Dataset):
    """Serves whole batches by indexing the decoded images with a list of indices: no per-item work.
    ``pixels`` (N, size, size) uint8 may be mapped from the decoded set: a batch reads its rows only."""

    def __init__(self, pixels: np.ndarray, positions: np.ndarray, labels: torch.Tensor):
        self.pixels, self.positions, self.labels = pixels, positions, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        rows = self.positions[np.asarray(indices)]
        return torch.from_numpy(np.ascontiguousarray(self.pixels[rows])).unsqueeze(1), self.labels[indices]


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
    """Serves the images of a class-folder data set in batches, split without leaks by duplicate group.

    Images are decoded and resized once (:mod:`brain_mri.data.index`), kept in memory as uint8, split
    (:mod:`brain_mri.data.split`), and turned into float 3-channel batches on the device.
    """

    if TYPE_CHECKING:  # Lightning types hparams as a mapping; ours are read as attributes

        @property
        def hparams(self) -> Any: ...

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
        manifest: str | None = None,
        sources: list[str] | None = None,
        holdout_source: str | None = None,
        split_by: str = "group",
        duplicate_threshold: float = DEFAULT_THRESHOLD,
        on_bad_image: str = "error",
        min_image_size: int = 32,
        cache_dir: str | None = None,
        crop: str = "none",
        augmentation: torch.nn.Module | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        download: bool = False,
        synthetic: bool = False,
        synthetic_per_class: int = 40,
    ):
        super().__init__()
        if image_size < 32:
            raise BrainMRIError(f"data.image_size must be at least 32 pixels, got {image_size}.")
        if crop not in CROPS:
            raise BrainMRIError(f"data.crop must be one of {', '.join(CROPS)}, got '{crop}'.")
        if split_by not in ("group", "image"):
            raise BrainMRIError(
                f"data.split_by must be 'group' (whole duplicate groups or patients) or 'image', "
                f"got '{split_by}'."
            )
        if on_bad_image not in ("error", "skip"):
            raise BrainMRIError(f"data.on_bad_image must be 'error' or 'skip', got '{on_bad_image}'.")
        if num_workers < 0:
            raise BrainMRIError(
                f"data.num_workers must be 0 or more (0: load in the main process), got {num_workers}."
            )
        if batch_size < 1:
            raise BrainMRIError(f"data.batch_size must be at least 1, got {batch_size}.")
        if not 0 < duplicate_threshold <= 1:
            raise BrainMRIError(
                f"data.duplicate_threshold must lie in (0, 1] (cosine similarity of copies), "
                f"got {duplicate_threshold}."
            )
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
        # the augmentation policy is an object (from the augmentation/ config group): not a hyperparameter
        self.save_hyperparameters(logger=False, ignore=["augmentation"])
        self.augmentation = augmentation
        if sources and len(set(sources)) < len(sources):
            raise BrainMRIError(f"data.sources names a folder twice: {list(sources)}.")
        if manifest and sources:
            raise BrainMRIError(
                "data.manifest gives each image's source in its source column: drop data.sources."
            )
        if holdout_source and not (sources or manifest):
            raise BrainMRIError(
                f"data.holdout_source={holdout_source} needs sources: a data.manifest with a source column, "
                "or one folder of class folders per source (data.sources=[...])."
            )
        if manifest and (synthetic or download):
            raise BrainMRIError("data.manifest lists its own images: drop data.synthetic / data.download.")
        if manifest:  # its paths are relative to its folder, which is the data root
            self.hparams.manifest = str(Path(manifest).expanduser().resolve())
            root = str(Path(self.hparams.manifest).parent)
        self.hparams.root = str(Path(root).expanduser().resolve())
        # plain Python values: hyperparameters are saved in checkpoints, which must load with weights_only
        self.hparams.class_names = [str(c) for c in class_names] if class_names else None
        self.hparams.class_map = {str(k): str(v) for k, v in class_map.items()} if class_map else None
        self.hparams.sources = [str(source) for source in sources] if sources else None
        self.index: ImageIndex | None = None
        self._store: DecodedSet | None = None
        self.split: Split | None = None
        # what Trainer.predict serves: the test partition, and the validation one for out-of-fold metrics
        self.predict_partitions: tuple[str, ...] = ("test",)

    @property
    def root(self) -> Path:
        return Path(self.hparams.root)

    def check_layout(self) -> int:
        """The data set's listing, checked before anything is decoded (a manifest whole, else the class
        folders): the number of files it lists, 0 when the data is not there yet."""
        hp = self.hparams
        listing = read_manifest(Path(hp.manifest), hp.class_names) if hp.manifest else None
        if listing is None and not self.root.exists():
            return 0
        return len(list_files(self.root, hp.class_names, hp.class_map, listing, hp.sources)[0])

    def prepare_data(self) -> None:
        """Lightning calls this in one process per machine once the processes exist: it fills the decode
        cache with what this process decoded, so parallel processes never all write the same entries."""
        if self.index is None:
            self._load()
        if self.index is not None and self.hparams.cache_dir:
            self.index.save_to(self._decoded_set())

    def setup(self, stage: str | None = None) -> None:
        """Index and split once; later calls (every Trainer stage) reuse the result."""
        if self.index is None:
            self._load()
        needed = ("test",) if stage in ("test", "predict") else PARTITIONS
        empty = [p for p in needed if not len(self.partition_indices(p))]
        if empty:
            hp = self.hparams
            folds = hp.num_folds >= 2  # cross-validation: the folds, not val_fraction, size the val partition
            setting = f"data.num_folds={hp.num_folds}" if folds else f"data.val_fraction={hp.val_fraction}"
            advice = (
                "fewer folds"
                if folds and "val" in empty
                else "smaller fractions"  # they leave nothing to train on
                if "train" in empty
                else "larger fractions"
            )
            raise BrainMRIError(
                f"The {' and '.join(empty)} partition(s) would be empty with {len(self.files)} images "
                f"({setting}, data.test_fraction={hp.test_fraction}): use {advice} or more images."
            )

    def _load(self) -> None:
        hp = self.hparams
        if hp.synthetic:
            generate_phantom_dataset(self.root, per_class=hp.synthetic_per_class)
        listing = read_manifest(Path(hp.manifest), hp.class_names) if hp.manifest else None
        if listing is None:
            ensure_dataset(self.root, download=hp.download)
        index = build_index(
            self.root,
            hp.image_size,
            hp.class_names,
            hp.class_map,
            hp.min_image_size,
            self._decoded_set() if hp.cache_dir else None,
            hp.duplicate_threshold,
            hp.crop,
            listing,
            hp.sources,
        )
        self._check_bad_images(index.bad)
        if hp.split_file:
            split = load_split(index, read_split(Path(hp.split_file)), hp.split_file, hp.num_folds, hp.fold)
        else:
            split = make_split(
                index,
                hp.val_fraction,
                hp.test_fraction,
                hp.split_seed,
                hp.num_folds,
                hp.fold,
                hp.holdout_source,
                hp.split_by,
            )
        if len(split.order) < len(index.files):
            log.warning(
                "%d image(s) under %s are not in the split %s and are left out.",
                len(index.files) - len(split.order),
                self.root,
                hp.split_file,
            )
        self.index, self.split = index, split
        self._files = [index.files[i] for i in split.order]
        self.split_table = split_rows(index, split)
        counts = {p: self.partition_indices(p).size for p in PARTITIONS}
        groups = len(set(split.groups.tolist()))
        kind = (
            "groups (patients or studies, with their copies)"
            if listing and listing.groups
            else "duplicate groups"
        )
        log.info(
            "Data: %d images in %d %s from %s; split %s", len(self.files), groups, kind, self.root, counts
        )
        for partition in ("val", "test"):
            present = {self._files[i].label for i in self.partition_indices(partition)}
            missing = [name for label, name in enumerate(index.class_names) if label not in present]
            if counts[partition] and missing:
                log.warning(
                    "The %s partition holds no images of %s: its AUROC and sensitivity are undefined%s. "
                    "Use more images, or larger data.val_fraction / data.test_fraction.",
                    partition,
                    ", ".join(missing),
                    ", and the best checkpoint is chosen on the other classes alone"
                    if partition == "val"
                    else "",
                )

    def _decoded_set(self) -> DecodedSet:
        """One per data module: a folder found unwritable is said once."""
        if self._store is None:
            hp = self.hparams
            self._store = DecodedSet(Path(hp.cache_dir).expanduser(), self.root, hp.image_size, hp.crop)
        return self._store

    def _check_bad_images(self, bad: list[tuple[str, str]]) -> None:
        """Stop and list every unreadable file, or (``on_bad_image=skip``) warn."""
        if not bad:
            return
        listing = "\n".join(f"  {path}: {reason}" for path, reason in bad)
        if self.hparams.on_bad_image != "skip":
            raise BrainMRIError(
                f"{len(bad)} file(s) under {self.root} cannot be read as images:\n{listing}\n"
                "Fix or remove them, or skip them with data.on_bad_image=skip."
            )
        log.warning("Skipping %d unreadable file(s):\n%s", len(bad), listing)

    @property
    def files(self) -> list[ImageFile]:
        """The images in split order."""
        return self._files if self.split else []

    @property
    def images(self) -> torch.Tensor:
        """The images in split order, (N, 1, size, size) uint8: a copy (batches read the shared set)."""
        assert self.index is not None and self.split is not None, "setup() first"
        return torch.from_numpy(np.ascontiguousarray(self.index.pixels[self.split.order])).unsqueeze(1)

    @property
    def partitions(self) -> list[str]:
        return self.split.partitions if self.split else []

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names if self.index else []

    @property
    def sources(self) -> list[str] | None:
        """Where each image of the split comes from (in the split's order), or None."""
        return [row["source"] for row in self.split_table] if self.index and self.index.sources else None

    @property
    def near_duplicates(self) -> list[tuple[str, str, str, str, float]]:
        """Look-alikes under different classes (path, class, path, class, similarity): not grouped."""
        return self.index.near_duplicates if self.index else []

    @property
    def bad_files(self) -> list[tuple[str, str]]:
        """Files left out as unreadable (``on_bad_image=skip``), with the reason."""
        return self.index.bad if self.index else []

    @property
    def data_fingerprint(self) -> str:
        """One hash for the exact set of files (paths and contents) the split uses."""
        return data_fingerprint(self.split_table)

    def partition_indices(self, partition: str) -> np.ndarray:
        return np.flatnonzero(np.array(self.partitions) == partition)

    def partition_files(self, partition: str) -> list[ImageFile]:
        return [self.files[i] for i in self.partition_indices(partition)]

    def partition_hashes(self, partition: str) -> list[str]:
        """Content hashes (sha256) of a partition's images, as in ``split.csv``."""
        return [self.split_table[i]["sha256"] for i in self.partition_indices(partition)]

    def partition_loader(self, partition: str, shuffle: bool = False, sharded: bool = True) -> DataLoader:
        """Batches of one partition; ``sharded=False`` gives every image to this process, even under DDP."""
        assert self.index is not None and self.split is not None, "setup() first"
        indices = self.partition_indices(partition)
        labels = torch.tensor([f.label for f in self.files])
        dataset = IndexedBatches(
            self.index.pixels, np.asarray(self.split.order)[indices], labels[torch.from_numpy(indices)]
        )
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

    def predict_dataloader(self) -> list[DataLoader]:
        """The ``predict_partitions``, whole in every process (predictions are written by one), in one
        ``Trainer.predict`` call: under ddp_spawn each call starts the processes anew."""
        return [self.partition_loader(partition, sharded=False) for partition in self.predict_partitions]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 batches become the model's float input on the device; training batches are augmented."""
        if isinstance(batch, torch.Tensor):  # the model summary's example input: already the model's input
            return batch
        images, labels = batch
        images = to_model_input(images)
        if self.augmentation is not None and self.trainer is not None and self.trainer.training:
            images = self.augmentation(images)
        return images, labels
