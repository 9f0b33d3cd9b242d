from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brain_mri.data.folder import scan_image_files
from brain_mri.data.index import build_index
from brain_mri.data.preprocessing import read_grayscale
from brain_mri.errors import BrainMRIError


def make_class_folders(root: Path) -> None:
    for name in ("no", "yes"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((40, 50), 100, np.uint8)).save(root / name / "a.png")


def test_scan_orders_classes_and_ignores_system_files(tmp_path):
    make_class_folders(tmp_path)
    (tmp_path / "yes" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "yes" / "Thumbs.db").write_bytes(b"\0\0")
    (tmp_path / ".hidden").mkdir()
    files = scan_image_files(tmp_path)
    assert [(f.path, f.class_name, f.label) for f in files] == [
        ("no/a.png", "no", 0),
        ("yes/a.png", "yes", 1),
    ]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_every_mode_becomes_8bit_grayscale(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    image = Image.fromarray(gradient).convert("RGB").convert(mode) if mode != "I;16" else None
    if mode == "I;16":
        image = Image.fromarray(gradient.astype(np.uint16) * 257)
    path = tmp_path / "scan.jpg"  # a PNG under a .jpg name, as in the real set
    image.save(path, format="PNG")
    gray = np.asarray(read_grayscale(path))
    assert gray.dtype == np.uint8 and gray.shape == (48, 64)
    assert gray[:, 0].max() < 10 and gray[:, -1].min() > 240  # the full range survives every mode


def test_unreadable_files_are_collected_not_raised(tmp_path):
    make_class_folders(tmp_path)
    (tmp_path / "no" / "empty.jpg").write_bytes(b"")
    (tmp_path / "yes" / "notes.jpg").write_text("not an image")
    decoded = build_index(tmp_path, 32)
    assert [f.path for f in decoded.files] == ["no/a.png", "yes/a.png"]
    assert [path for path, _ in decoded.bad] == ["no/empty.jpg", "yes/notes.jpg"]
    assert decoded.pixels.shape == (2, 32, 32) and len(decoded.sha256) == 2


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(BrainMRIError, match="does not exist"):
        scan_image_files(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(BrainMRIError, match="at least two"):
        scan_image_files(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(BrainMRIError, match="holds no files"):
        scan_image_files(tmp_path)


def test_every_real_image_loads(real_root):
    files = scan_image_files(real_root)
    assert len(files) == 253
    assert sum(f.label for f in files) == 155  # yes = 1
    decoded = build_index(real_root, 64)
    assert not decoded.bad and decoded.pixels.shape == (253, 64, 64) and decoded.pixels.dtype == np.uint8
    assert decoded.fingerprints.shape[0] == 253 and np.isfinite(decoded.fingerprints).all()
    assert len(set(decoded.sha256)) < 253  # byte-identical copies share a hash


def write_dicom(path: Path, pixels: np.ndarray, center: float | None, width: float | None) -> Path:
    """A minimal MR slice (12 bits stored in 16), as scanners write it, with an optional window."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    if center is not None:
        dataset.WindowCenter, dataset.WindowWidth = center, width
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_a_dicom_slice_is_read_through_its_own_window(tmp_path):
    values = np.tile(np.linspace(0, 4000, 64), (40, 1))  # 12-bit values, dark left, bright right
    windowed = np.asarray(read_grayscale(write_dicom(tmp_path / "slice", values, center=1000, width=500)))
    assert windowed.shape == (40, 64) and windowed.dtype == np.uint8
    below, inside, above = values[0] < 740, (values[0] > 800) & (values[0] < 1200), values[0] > 1260
    assert (windowed[:, below] == 0).all() and (windowed[:, above] == 255).all()
    assert 0 < windowed[0, inside].min() < windowed[0, inside].max() < 255
    whole = np.asarray(read_grayscale(write_dicom(tmp_path / "plain.dcm", values, None, None)))
    assert whole[0, 0] == 0 and whole[0, -1] == 255 and np.all(np.diff(whole[0].astype(int)) >= 0)


def test_dicom_slices_train_beside_png_ones(tmp_path):
    make_class_folders(tmp_path)
    write_dicom(tmp_path / "yes" / "b.dcm", np.full((40, 50), 900), center=1000, width=500)
    index = build_index(tmp_path, 32)
    assert [f.path for f in index.files] == ["no/a.png", "yes/a.png", "yes/b.dcm"] and not index.bad
    assert index.pixels[2].mean() == pytest.approx(255 * (900 - 750) / 500, abs=2)


def float_tiff(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.float32), mode="F").save(path)
    return path


def test_a_float_image_is_scaled_from_its_range(tmp_path):
    pixels = np.linspace(-1.0, 3.0, 64 * 64).reshape(64, 64)
    gray = np.asarray(read_grayscale(float_tiff(tmp_path / "f.tif", pixels)))
    assert gray.min() == 0 and gray.max() == 255 and gray[0, 0] == 0 and gray[-1, -1] == 255


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_a_float_image_with_non_finite_pixels_is_unreadable_in_training_and_prediction(
    tmp_path, trained_run, bad_value
):
    from brain_mri.models import BrainMRIClassifier
    from brain_mri.models.inference import predict_files

    make_class_folders(tmp_path)
    pixels = np.random.default_rng(0).random((64, 64)) * 100
    pixels[10:12, 10:13] = bad_value
    damaged = float_tiff(tmp_path / "yes" / "damaged.tif", pixels)
    index = build_index(tmp_path, 32)
    assert "yes/damaged.tif" not in [f.path for f in index.files]
    assert dict(index.bad)["yes/damaged.tif"] == (
        "6 of its 4096 pixels are NaN or infinite (a damaged float image)"
    )
    model = BrainMRIClassifier.load_from_checkpoint(next((trained_run / "checkpoints").glob("epoch*.ckpt")))
    bad: list = []
    assert list(predict_files(model, [damaged], bad=bad, progress=False)) == []
    assert bad == [(str(damaged), "6 of its 4096 pixels are NaN or infinite (a damaged float image)")]


def test_a_file_name_of_250_bytes_is_written_atomically(tmp_path):
    from brain_mri.atomic import atomic_path

    target = tmp_path / ("x" * 246 + ".png")
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == [target.name]
