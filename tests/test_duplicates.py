import shutil

import numpy as np
import pytest
from PIL import Image

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.duplicates import MAX_GROUP, duplicate_groups, similar_pairs
from brain_mri.data.index import build_index
from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import read_csv, write_near_duplicates


def groups_by_path(root):
    index = build_index(root, 32)
    return dict(zip([f.path for f in index.files], index.groups.tolist(), strict=True))


def test_planted_phantom_duplicates_are_grouped_and_nothing_else(phantom_root):
    group = groups_by_path(phantom_root)
    for name in ("no", "yes"):
        assert group[f"{name}/{name}_000.png"] == group[f"{name}/{name}_copy_of_000.png"]
        assert group[f"{name}/{name}_001.png"] == group[f"{name}/{name}_resized_001.jpg"]
    assert len(group) == 44 and len(set(group.values())) == 40  # 20 distinct phantoms per class


def grouped(prints, labels=None, keys=None, threshold=0.9):
    """Groups of fingerprints with one class and distinct content unless given."""
    labels = np.zeros(len(prints), dtype=int) if labels is None else np.asarray(labels)
    keys = keys or [f"image {i}" for i in range(len(prints))]
    return duplicate_groups(np.asarray(prints, dtype=np.float32), labels, keys, threshold)


def test_groups_are_transitive_and_numbered_in_order():
    a, b = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    near_a = (a + 0.3 * b) / np.linalg.norm(a + 0.3 * b)
    assert grouped(np.stack([b, a, near_a, b])).groups.tolist() == [0, 1, 1, 0]


def test_real_copies_grouped_and_distinct_scans_apart(real_root):
    group = groups_by_path(real_root)
    assert group["yes/Y20.jpg"] == group["yes/Y92.png"]  # resized re-encoding
    assert group["no/12 no.jpg"] == group["no/no 90.jpg"]
    assert group["yes/Y255.JPG"] == group["yes/Y70.jpg"]  # Y70 is the copy with an arrow drawn in
    assert group["yes/Y92.jpg"] != group["yes/Y92.png"]  # same name, different patients
    assert group["yes/Y27.jpg"] != group["yes/Y56.jpg"]  # the most alike distinct scans
    assert len(set(group.values())) == 202


def test_a_chain_of_copies_is_one_group_though_its_ends_differ():
    angles = np.radians([0, 20, 40, 90])  # neighbours 20 degrees apart (cosine 0.94), the ends 40 (0.77)
    prints = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    assert grouped(prints).groups.tolist() == [0, 0, 0, 1]


def test_a_long_chain_of_look_alikes_is_cut_below_the_largest_group_and_said():
    angles = np.radians(np.arange(80) * 2)  # 80 neighbours 2 degrees apart: one long chain
    prints = np.stack([np.cos(angles), np.sin(angles), np.zeros(80)], axis=1)
    grouping = grouped(prints)
    sizes = np.bincount(grouping.groups)
    assert sizes.max() <= MAX_GROUP and len(sizes) < 80  # cut into runs of neighbours, not into singles
    assert grouping.cut_chains == [(80, sizes.max())]
    for group in range(len(sizes)):  # each part is a run of consecutive neighbours
        members = np.flatnonzero(grouping.groups == group)
        assert members.tolist() == list(range(members[0], members[-1] + 1))


def test_copies_of_one_scan_stay_one_group_however_many():
    prints = np.tile(np.eye(3)[0], (40, 1))
    grouping = grouped(prints, keys=["same pixels"] * 40)
    assert grouping.groups.tolist() == [0] * 40 and grouping.cut_chains == []


def test_look_alikes_under_different_classes_are_listed_not_grouped():
    a, b = np.eye(3)[0], np.eye(3)[1]
    near_a = (a + 0.3 * b) / np.linalg.norm(a + 0.3 * b)
    grouping = grouped(np.stack([a, near_a, b]), labels=[0, 1, 1])
    assert grouping.groups.tolist() == [0, 1, 2]
    ((first, second, score),) = grouping.across_classes
    assert (first, second) == (0, 1) and score == pytest.approx(float(a @ near_a))


def test_identical_pixels_are_one_group_whatever_the_fingerprint():
    """Uniform images have no structure (a fingerprint of zeros): only their pixels say they are copies."""
    prints = np.zeros((4, 3))
    keys = ["black", "grey", "black", "grey"]
    assert grouped(prints, keys=keys).groups.tolist() == [0, 1, 0, 1]


def uniform_images(folder, classes):
    """8 copies each of an all-black and an all-grey image per class, as PNG and as BMP (other bytes)."""
    for name in classes:
        (folder / name).mkdir(parents=True)
        for value, colour in ((0, "black"), (128, "grey")):
            for copy in range(8):
                suffix = "png" if copy % 2 else "bmp"
                Image.new("L", (64, 64), value).save(folder / name / f"{colour}_{copy}.{suffix}")


def test_uniform_copies_form_one_group_each_and_stay_in_one_partition(tmp_path):
    uniform_images(tmp_path / "data", ["no"])
    generate_phantom_dataset(tmp_path / "phantoms", per_class=20, size=64)
    shutil.copytree(tmp_path / "phantoms" / "yes", tmp_path / "data" / "yes")
    datamodule = BrainMRIDataModule(str(tmp_path / "data"), image_size=32)
    datamodule.setup()
    rows = [r for r in datamodule.split_table if r["class"] == "no"]
    for colour in ("black", "grey"):
        copies = [r for r in rows if r["path"].startswith(f"no/{colour}_")]
        assert len(copies) == 8 and len({r["group"] for r in copies}) == 1
        assert len({r["partition"] for r in copies}) == 1


def test_the_same_image_under_two_classes_is_refused_with_every_copy_named(tmp_path):
    uniform_images(tmp_path / "data", ["no", "yes"])
    datamodule = BrainMRIDataModule(str(tmp_path / "data"), image_size=32)
    with pytest.raises(BrainMRIError, match="The same image appears under more than one class") as refused:
        datamodule.setup()
    assert all(f"{name}/black_{copy}." in str(refused.value) for name in ("no", "yes") for copy in range(8))


def test_a_look_alike_under_the_other_class_is_listed_and_the_data_set_still_starts(phantom_root, tmp_path):
    data = shutil.copytree(phantom_root, tmp_path / "data")
    with Image.open(data / "yes" / "yes_005.png") as image:  # re-encoded smaller: not the same pixels
        image.resize((56, 56)).save(data / "no" / "looks_like_yes_005.jpg", quality=95)
    datamodule = BrainMRIDataModule(str(data), image_size=32)
    datamodule.setup()
    ((path, label, other, other_label, score),) = [
        pair for pair in datamodule.near_duplicates if "looks_like" in pair[0] + pair[2]
    ]
    assert {path, other} == {"yes/yes_005.png", "no/looks_like_yes_005.jpg"} and {label, other_label} == {
        "yes",
        "no",
    }
    assert score >= 0.9
    group = {r["path"]: r["group"] for r in datamodule.split_table}
    assert group["yes/yes_005.png"] != group["no/looks_like_yes_005.jpg"]  # not grouped across classes
    write_near_duplicates(tmp_path, datamodule.near_duplicates)
    listed = read_csv(tmp_path / "near_duplicates.csv")
    assert {r["path"] for r in listed} | {r["other_path"] for r in listed} >= {path, other}


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("bfloat16", [True, False])
def test_the_rough_pass_keeps_exactly_the_pairs_a_full_comparison_finds(structured, bfloat16, monkeypatch):
    """Fingerprints in a few directions (many pairs near any threshold) or spread over all."""
    monkeypatch.setattr("brain_mri.data.duplicates.bfloat16_is_faster", lambda: bfloat16)
    rng = np.random.default_rng(0)
    dims = 8 if structured else 1024
    vectors = rng.normal(size=(1500, dims)) @ rng.normal(size=(dims, 1024))
    vectors[700:760] = vectors[:60] + 0.3 * rng.normal(size=(60, 1024)) * vectors.std()  # near copies
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    full = vectors @ vectors.T

    def pairs(at_least):
        return set(zip(*(side.tolist() for side in np.nonzero(np.triu(full >= at_least, 1))), strict=True))

    for threshold in (0.8, 0.9, 0.95):
        i, j, score = similar_pairs(vectors, threshold)
        found = set(zip(i.tolist(), j.tolist(), strict=True))
        # rounding may differ between the two ways of computing a pair within 1e-5 of the threshold
        assert pairs(threshold + 1e-5) <= found <= pairs(threshold - 1e-5) and len(found) == len(i)
        assert len(pairs(threshold + 1e-5)) > 50 and np.allclose(score, full[i, j], atol=1e-5)
