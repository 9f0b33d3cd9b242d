import logging
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from brain_mri.data import BrainMRIDataModule
from brain_mri.data import index as index_module
from brain_mri.data.folder import scan_image_files
from brain_mri.data.index import decode_files
from brain_mri.data.preprocessing import augmentation_policy, to_model_input
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier


def test_batches_are_uint8_in_memory_and_float_rgb_on_device(phantom_root):
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=40, batch_size=8)
    datamodule.setup()
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 40, 40)
    model_input, same_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    assert model_input.shape == (8, 3, 40, 40) and model_input.dtype == torch.float32
    assert model_input.min() >= 0.0 and model_input.max() <= 1.0
    assert torch.equal(model_input[:, 0], model_input[:, 2]) and torch.equal(same_labels, labels)
    assert sum(len(b[1]) for b in datamodule.train_dataloader()) == len(datamodule.partition_indices("train"))


def test_a_lone_last_training_image_is_dropped_for_batch_norm(phantom_root):
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=32)
    datamodule.setup()
    train_size = len(datamodule.partition_indices("train"))
    datamodule.hparams.batch_size = train_size - 1
    assert [len(b[1]) for b in datamodule.train_dataloader()] == [train_size - 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 16}, "at least 32 pixels"),
        ({"on_bad_image": "ignore"}, "'error' or 'skip'"),
        ({"num_folds": 1}, "num_folds >= 2"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 0.6, "test_fraction": 0.6}, "sum to at most 1"),
    ],
)
def test_impossible_settings_are_refused_at_once(tmp_path, kwargs, message):
    with pytest.raises(BrainMRIError, match=message):
        BrainMRIDataModule(str(tmp_path), **kwargs)


def test_fractions_that_leave_a_partition_empty_are_refused(phantom_root):
    with pytest.raises(BrainMRIError, match="val partition"):
        BrainMRIDataModule(str(phantom_root), val_fraction=0.0).setup("fit")
    BrainMRIDataModule(str(phantom_root), val_fraction=0.0).setup("test")  # evaluation needs only test


def test_missing_data_folder_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("brain_mri.data.download.is_online", lambda: False)
    datamodule = BrainMRIDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(BrainMRIError) as error:
        datamodule.setup()
    text = str(error.value)
    assert str(tmp_path / "nowhere") in text and "data=synthetic" in text and "data.download=true" in text


def test_decoded_images_are_cached_per_file_content(phantom_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="brain_mri")
    data, cache = tmp_path / "data", str(tmp_path / "cache")
    shutil.copytree(phantom_root, data)

    def load():
        datamodule = BrainMRIDataModule(str(data), image_size=32, cache_dir=cache)
        datamodule.prepare_data()  # what the Trainer calls in one process per machine: fills the cache
        datamodule.setup()
        return datamodule

    first = load()
    assert "44 decoded, 0 from the cache" in caplog.text  # each file read on its own, copies too
    assert "Finding duplicates among 44 images" in caplog.text  # said: on a large set it takes a while
    assert "40 duplicate groups found in" in caplog.text
    caplog.clear()
    second = load()
    assert "0 decoded, 44 from the cache" in caplog.text
    assert "Finding duplicates" not in caplog.text  # the grouping is kept with the decoded set
    assert torch.equal(first.images, second.images) and second.split_table == first.split_table
    # both read the pixels from one file on disk: processes share its pages instead of a copy each
    assert isinstance(first.index.pixels, np.memmap) and isinstance(second.index.pixels, np.memmap)
    assert first.index.pixels.filename == second.index.pixels.filename
    caplog.clear()
    edited = np.asarray(Image.open(data / "no" / "no_005.png")).copy()
    edited[0, 0] ^= 1
    Image.fromarray(edited).save(data / "no" / "no_005.png")  # one file changed by one pixel
    load()
    assert "1 decoded, 43 from the cache" in caplog.text


class BatchRecorder(L.Callback):
    """The batches as they enter the model, after the data module's device-side transforms."""

    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch[0].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch[0].clone())


def test_augmentation_moves_training_batches_only(phantom_root):
    policy = augmentation_policy(32, flip=0.5, degrees=10, translate=0.05, zoom=0.1)  # augmentation=light
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=32, batch_size=8, augmentation=policy)
    recorder = BatchRecorder()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(BrainMRIClassifier(channels_last=False), datamodule=datamodule)
    plain_val = to_model_input(datamodule.images[datamodule.partition_indices("val")])
    assert torch.equal(torch.cat(recorder.val), plain_val)  # validation: untouched, in order
    plain_train = to_model_input(datamodule.images[datamodule.partition_indices("train")]).flatten(1)
    augmented = torch.cat(recorder.train)
    assert len(augmented) == 16 and augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6
    for image in augmented.flatten(1):  # every training image moved away from every original
        assert (plain_train - image).abs().mean(dim=1).min() > 0.01


def test_augmentation_with_no_motion_only_flips():
    images = torch.rand(16, 3, 32, 32)
    torch.manual_seed(0)
    out = augmentation_policy(32, flip=0.5)(images)
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, images, strict=True)]
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, images, strict=True)]
    assert all(s or f for s, f in zip(same, flipped, strict=True)) and any(same) and any(flipped)


def test_the_study_has_no_augmentation_and_a_resumed_policy_repeats_its_draws():
    assert augmentation_policy(32) is None
    policy = augmentation_policy(32, crop_scale=0.7, flip=0.5, degrees=15, brightness=0.2, contrast=0.2)
    images = torch.rand(8, 3, 32, 32)
    torch.manual_seed(3)
    first = policy(images)
    torch.manual_seed(3)
    assert torch.equal(policy(images), first)  # drawn from torch's seeded generator (saved in checkpoints)
    assert first.shape == images.shape and first.min() >= 0.0 and first.max() <= 1.0
    assert not torch.allclose(first, images, atol=1e-3)


@pytest.mark.parametrize("damaged", ["*.npz", "*[0-9a-f].npy", "*.fingerprints.npy"])  # listing, arrays
def test_a_damaged_decode_cache_is_decoded_again_and_rewritten(phantom_root, tmp_path, caplog, damaged):
    caplog.set_level(logging.INFO, logger="brain_mri")
    cache = tmp_path / "cache"

    def load():
        caplog.clear()
        datamodule = BrainMRIDataModule(str(phantom_root), image_size=32, cache_dir=str(cache))
        datamodule.prepare_data()
        datamodule.setup()
        return datamodule

    first = load()
    images = first.images  # read before the file it maps is cut (in place: a mapping then faults)
    (stored,) = cache.rglob(damaged)
    content = stored.read_bytes()
    if damaged.endswith(".npz"):
        stored.write_bytes(content[: len(content) // 2])  # cut in half
    else:  # the same size, other bytes: seen by the checksum
        stored.write_bytes(content[:-64] + bytes(255 - b for b in content[-64:]))
    second = load()
    assert "is damaged: decoding again" in caplog.text and "44 decoded, 0 from the cache" in caplog.text
    assert torch.equal(images, second.images) and first.split_table == second.split_table
    load()
    assert "0 decoded, 44 from the cache" in caplog.text and "damaged" not in caplog.text


def test_the_grouping_is_kept_with_the_decoded_set_for_the_same_images_and_threshold(
    phantom_root, tmp_path, monkeypatch
):
    made = []
    original = index_module.duplicate_groups
    monkeypatch.setattr(
        index_module, "duplicate_groups", lambda *args: made.append(args[-1]) or original(*args)
    )

    def groups(threshold):
        datamodule = BrainMRIDataModule(
            str(phantom_root), image_size=32, cache_dir=str(tmp_path), duplicate_threshold=threshold
        )
        datamodule.prepare_data()
        return datamodule.index.groups

    first = groups(0.9)
    assert np.array_equal(groups(0.9), first) and made == [0.9]  # the second run takes it from the set
    groups(0.95)
    assert made == [0.9, 0.95]  # another threshold: grouped again


def test_a_cache_folder_that_cannot_be_written_is_left_out_with_one_warning(phantom_root, tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=32, cache_dir=str(tmp_path / "a-file"))
    datamodule.prepare_data()
    datamodule.setup()
    assert caplog.text.count("Cannot write the decode cache") == 1 and len(datamodule.files) == 44


def test_mri_artefacts_change_intensities_only_and_keep_the_gray_image_gray():
    pytest.importorskip("monai")
    policy = augmentation_policy(32, mri_artefacts=1.0)  # every artefact on every image
    torch.manual_seed(0)
    images = torch.rand(4, 1, 32, 32).expand(-1, 3, -1, -1)
    out = policy(images)
    assert out.shape == images.shape and torch.equal(out[:, 0], out[:, 2])
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out - images).abs().mean() > 0.01


def test_more_folds_than_the_images_allow_asks_for_fewer_folds(phantom_root):
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=32, num_folds=60, fold=59)
    with pytest.raises(
        BrainMRIError, match=r"val partition\(s\) would be empty .*data\.num_folds=60.* fewer folds"
    ):
        datamodule.setup()


def test_fractions_that_leave_nothing_to_train_on_ask_for_smaller_fractions(phantom_root):
    datamodule = BrainMRIDataModule(str(phantom_root), image_size=32, val_fraction=0.9, test_fraction=0.1)
    with pytest.raises(BrainMRIError, match=r"train partition\(s\) would be empty .* use smaller fractions"):
        datamodule.setup()


def test_a_process_per_core_reads_the_same_index_as_one_process(phantom_root, tmp_path):
    data = shutil.copytree(phantom_root, tmp_path / "data")
    (data / "no" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # one unreadable file among them
    files = scan_image_files(data)
    alone = decode_files(data, files, 32, workers=1)
    pooled = decode_files(data, files, 32, workers=2)
    assert [f.path for f in alone.readable] == [f.path for f in pooled.readable]  # in order
    assert np.array_equal(alone.pixels, pooled.pixels) and np.array_equal(alone.sizes, pooled.sizes)
    assert np.array_equal(alone.fingerprints, pooled.fingerprints)
    assert (alone.sha256, alone.pixel_hashes, alone.bad) == (pooled.sha256, pooled.pixel_hashes, pooled.bad)
    assert [path for path, _ in alone.bad] == ["no/broken.png"] and alone.fresh == len(alone.readable)
