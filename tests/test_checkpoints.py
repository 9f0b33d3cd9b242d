import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brain_mri.data.preprocessing import prepare_images
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import read_csv, read_json
from helpers import PROJECT_ROOT


class TouchOnLoad:
    """A pickled payload that would create a file if the checkpoint were unpickled unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_from_checkpoint_in_a_fresh_python(trained_run):
    checkpoint = next((trained_run / "checkpoints").glob("epoch*.ckpt"))
    code = (
        "import sys, torch\n"
        "from brain_mri import BrainMRIClassifier\n"
        "model = BrainMRIClassifier.load_from_checkpoint(sys.argv[1])\n"
        "model.eval()\n"
        "print(model.hparams.arch, tuple(model(torch.rand(1, 3, 32, 32)).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["resnet18", "(1,", "2)"]


def test_a_checkpoint_alone_prepares_new_images_and_repeats_the_runs_predictions(trained_run):
    """The best checkpoint, loaded with weights_only, prepares the test image files from its own input
    contract and predicts what the run (fp32, as here) wrote to predictions.csv."""
    model = BrainMRIClassifier.restored(
        load_checkpoint(read_json(trained_run / "metrics.json")["best_checkpoint"])
    )
    rows = read_csv(trained_run / "predictions.csv")
    root = Path(read_json(trained_run / "run_info.json")["data_root"])
    images = prepare_images([root / r["path"] for r in rows], model.hparams.image_size)
    with torch.no_grad():
        probabilities = model.eval()(images).softmax(dim=1)
    assert model.hparams.class_names == ["no", "yes"] and model.hparams.image_size == 32
    assert probabilities[:, 1].numpy() == pytest.approx([float(r["prob_yes"]) for r in rows], abs=1e-5)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(BrainMRIError, match="No checkpoint file"):
        load_checkpoint(tmp_path / "absent.ckpt")
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(BrainMRIError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(BrainMRIError, match="not a BrainMRIClassifier checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"arch": "resnet18"}, "extra": TouchOnLoad(marker)},
        tmp_path / "evil.ckpt",
    )
    with pytest.raises(BrainMRIError, match="refused"):
        load_checkpoint(tmp_path / "evil.ckpt")
    with pytest.raises(BrainMRIError, match="refused"):  # the class method goes through the same loader
        BrainMRIClassifier.load_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("lr", float("nan"), "model.lr must be a finite number, got nan."),
        ("image_size", -5, "image_size must be a whole number from 32 to 4096, got -5."),
        ("image_size", "big", "image_size must be a whole number from 32 to 4096, got 'big'."),
        ("freeze_backbone_epochs", "x", "model.freeze_backbone_epochs must be a whole number of 0 or more"),
        ("channels_last", "yes", "model.channels_last must be true or false, got 'yes'."),
        ("arch", ["resnet18"], "model architecture '['resnet18']'. Choose one of: convnext_tiny"),
        ("planted", 1, "hyperparameters a BrainMRIClassifier does not take: ['planted']"),
    ],
)
def test_a_damaged_hyperparameter_of_a_checkpoint_is_one_message_naming_it(
    trained_run, tmp_path, setting, value, said
):
    checkpoint = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"][setting] = value
    torch.save(checkpoint, tmp_path / "damaged.ckpt")
    with pytest.raises(BrainMRIError) as error:
        BrainMRIClassifier.load_from_checkpoint(tmp_path / "damaged.ckpt")
    assert said in str(error.value) and str(tmp_path / "damaged.ckpt") in str(error.value)


def test_weights_for_another_head_give_a_clear_message(trained_run):
    checkpoint = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"] |= {"num_classes": 3, "class_names": ["a", "b", "c"]}
    with pytest.raises(BrainMRIError, match="do not fit a resnet18 with 3 classes"):
        BrainMRIClassifier.restored(checkpoint)


def test_a_damaged_checkpoint_is_refused_even_alone(trained_run, tmp_path):
    copy = tmp_path / "copied.ckpt"  # away from its run folder
    data = bytearray((trained_run / "checkpoints" / "last.ckpt").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    copy.write_bytes(bytes(data))
    with pytest.raises(BrainMRIError, match=r"damaged: its part .* fails its checksum"):
        load_checkpoint(copy)
    with pytest.raises(BrainMRIError, match=r"damaged: its part .* fails its checksum"):
        BrainMRIClassifier.load_from_checkpoint(copy)  # the Python API too
    copy.write_bytes(data[:1000])  # cut off, as by an interrupted copy
    with pytest.raises(BrainMRIError, match=r"copied.ckpt is damaged or incomplete \(cut off"):
        load_checkpoint(copy)


def test_a_checkpoint_is_checksummed_once_per_version_of_the_file(trained_run, tmp_path, monkeypatch):
    """A ``ckpt_path=`` start checks the file, then Lightning loads it: its CRCs are read once; a file
    damaged in place after that is a new version, and is refused."""
    import zipfile

    copy = tmp_path / "copied.ckpt"
    copy.write_bytes((trained_run / "checkpoints" / "last.ckpt").read_bytes())
    reads = []
    testzip = zipfile.ZipFile.testzip
    monkeypatch.setattr(zipfile.ZipFile, "testzip", lambda self: reads.append(1) or testzip(self))
    load_checkpoint(copy)
    load_checkpoint(copy)
    assert len(reads) == 1
    data = bytearray(copy.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    copy.write_bytes(bytes(data))
    with pytest.raises(BrainMRIError, match=r"fails its checksum"):
        load_checkpoint(copy)
    assert len(reads) == 2


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("class_names", ["yes", "no"], "class_names ['yes', 'no'] (its run: ['no', 'yes'])"),
        ("normalization", "imagenet", "normalization 'imagenet' (its run: 'none')"),
    ],
)
def test_a_checkpoint_that_disagrees_with_its_run_is_refused(trained_run, tmp_path, setting, value, said):
    """In-range values that would make every prediction silently wrong (swapped classes, another input
    normalisation): the run's predictions.csv and config.yaml say what the checkpoint should hold."""
    from brain_mri.models.loading import load_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "predictions.csv"):
        shutil.copy(trained_run / name, run / name)
    checkpoint = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"][setting] = value
    torch.save(checkpoint, run / "checkpoints" / "edited.ckpt")
    with pytest.raises(BrainMRIError) as error:
        load_model(str(run / "checkpoints" / "edited.ckpt"), "none")
    assert said in str(error.value) and "edited or moved into another run's folder" in str(error.value)


@pytest.mark.parametrize("provenance", ["garbage", {"precision": "garbage"}])
def test_a_damaged_record_of_training_is_one_message(trained_run, tmp_path, provenance):
    checkpoint = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint["provenance"] = provenance
    torch.save(checkpoint, tmp_path / "damaged.ckpt")
    with pytest.raises(BrainMRIError, match=r"damaged\.ckpt holds a damaged record of its training"):
        BrainMRIClassifier.load_from_checkpoint(tmp_path / "damaged.ckpt")
