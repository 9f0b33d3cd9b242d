import hashlib
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.folder import ImageFile
from brain_mri.data.split import (
    check_groups_have_one_class,
    data_fingerprint,
    grouped_stratified_split,
    read_split,
    write_split,
)
from brain_mri.errors import BrainMRIError
from helpers import FIGSHARE_DATA, REAL_DATA


def planted_groups(seed=0):
    """300 images, 70 % positive, in groups of 1-4 images of one class."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, 120)
    groups = np.repeat(np.arange(120), sizes)[:300]
    labels = (rng.random(120) < 0.7).astype(int)[groups]
    return labels, groups


def test_split_is_deterministic_and_seed_dependent():
    labels, groups = planted_groups()
    first, _ = grouped_stratified_split(labels, groups, 0.1, 0.1, seed=1)
    assert first == grouped_stratified_split(labels, groups, 0.1, 0.1, seed=1)[0]
    assert first != grouped_stratified_split(labels, groups, 0.1, 0.1, seed=2)[0]


def test_split_is_stratified_and_keeps_groups_whole():
    labels, groups = planted_groups()
    partition, folds = grouped_stratified_split(labels, groups, 0.15, 0.2, seed=3)
    partition = np.array(partition)
    assert set(folds) == {-1}
    for group in np.unique(groups):
        assert len(set(partition[groups == group])) == 1
    for label in (0, 1):
        in_class = labels == label
        for name, fraction in (("val", 0.15), ("test", 0.2)):
            share = np.mean(partition[in_class] == name)
            assert abs(share - fraction) <= 4 / in_class.sum()  # within one group (<= 4 images)
    assert set(partition) == {"train", "val", "test"}


def test_k_folds_partition_the_non_test_images_and_leave_test_alone():
    labels, groups = planted_groups(seed=4)
    plain, _ = grouped_stratified_split(labels, groups, 0.1, 0.2, seed=7)
    test = [p == "test" for p in plain]
    val_sets = []
    for fold in range(5):
        partition, folds = grouped_stratified_split(labels, groups, 0.1, 0.2, seed=7, num_folds=5, fold=fold)
        assert [p == "test" for p in partition] == test  # the test partition never moves
        assert all((k == -1) == t for k, t in zip(folds, test, strict=True))
        assert [p == "val" for p in partition] == [k == fold for k in folds]
        val_sets.append({i for i, p in enumerate(partition) if p == "val"})
        for group in np.unique(groups):
            assert len({folds[i] for i in np.flatnonzero(groups == group)}) == 1
    assert sum(len(v) for v in val_sets) == len(set().union(*val_sets)) == len(labels) - sum(test)
    for label in (0, 1):
        sizes = [sum(labels[i] == label for i in v) for v in val_sets]
        assert max(sizes) - min(sizes) <= 4  # balanced to within one group


def test_conflicting_labels_name_the_files():
    files = [
        ImageFile("no/a.png", "no", 0),
        ImageFile("yes/b.png", "yes", 1),
        ImageFile("yes/c.png", "yes", 1),
    ]
    with pytest.raises(BrainMRIError, match=r"no/a.png, yes/b.png") as refused:
        check_groups_have_one_class(files, np.array([0, 0, 1]))
    assert "(identical pixels)" in str(refused.value) and "remove the others" in str(refused.value)


def test_datamodule_split_is_disjoint_stratified_and_reusable(phantom_root, tmp_path):
    first = BrainMRIDataModule(str(phantom_root), image_size=32, split_seed=5)
    first.setup()
    write_split(tmp_path / "a.csv", first.split_table)
    rows = read_split(tmp_path / "a.csv")
    assert len(rows) == 44 and len({r["path"] for r in rows}) == 44
    by_group = defaultdict(set)
    for row in rows:
        by_group[row["group"]].add(row["partition"])
    assert all(len(parts) == 1 for parts in by_group.values())
    counts = Counter((r["class"], r["partition"]) for r in rows)
    assert counts[("no", "test")] in (2, 3) and counts[("yes", "test")] in (2, 3)

    reused = BrainMRIDataModule(
        str(phantom_root),
        image_size=48,
        split_file=str(tmp_path / "a.csv"),
        split_seed=99,
    )
    reused.setup()
    write_split(tmp_path / "b.csv", reused.split_table)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert [f.path for f in reused.partition_files("test")] == [
        r["path"] for r in rows if r["partition"] == "test"
    ]


def test_saved_folds_can_be_reused_for_another_fold(phantom_root, tmp_path):
    first = BrainMRIDataModule(str(phantom_root), image_size=32, num_folds=3, fold=0)
    first.setup()
    write_split(tmp_path / "split.csv", first.split_table)
    saved = read_split(tmp_path / "split.csv")
    other = BrainMRIDataModule(
        str(phantom_root), image_size=32, num_folds=3, fold=2, split_file=str(tmp_path / "split.csv")
    )
    other.setup()
    val = {f.path for f in other.partition_files("val")}
    assert val == {r["path"] for r in saved if r["fold"] == "2"} and val
    with pytest.raises(BrainMRIError, match="num_folds >= 2"):
        BrainMRIDataModule(str(phantom_root), num_folds=3, fold=3)


def test_real_split_keeps_named_copies_together(real_root):
    datamodule = BrainMRIDataModule(str(real_root), image_size=32)
    datamodule.setup()
    partition = {r["path"]: r["partition"] for r in datamodule.split_table}
    assert partition["yes/Y20.jpg"] == partition["yes/Y92.png"]
    assert partition["no/12 no.jpg"] == partition["no/no 90.jpg"]
    assert Counter(partition.values()) == {"train": 199, "val": 28, "test": 26}  # data.split_seed=42
    test_classes = Counter(r["class"] for r in datamodule.split_table if r["partition"] == "test")
    assert test_classes == {"yes": 16, "no": 10}


# The split each real set got from the code before duplicate groups became scipy's connected components
# (commit 69ffd93^): rows, groups, and the sha256 of its sorted "path,class,partition,fold,group" lines.
SPLITS_BEFORE = {
    "kaggle": (REAL_DATA, 0.9, 253, 202, "9b4b01a6e7c212e638c8e6374662de723a3c1ccba1fab1d26b71367c1bd0caec"),
    "figshare": (
        FIGSHARE_DATA,
        0.95,
        3064,
        2945,
        "71475e1702390de5bb3f51ca7c9f8c137d1ed90b0596ca29fadbaec5b328be3f",
    ),
}


@pytest.mark.parametrize("name", SPLITS_BEFORE)
def test_the_real_sets_split_as_they_did_before_grouping_used_connected_components(name, tmp_path):
    root, threshold, images, groups, digest = SPLITS_BEFORE[name]
    if not root.is_dir():
        pytest.skip(f"the {name} set is not at {root}")
    datamodule = BrainMRIDataModule(
        str(root), image_size=32, duplicate_threshold=threshold, cache_dir=str(tmp_path)
    )
    datamodule.setup()
    rows = sorted(datamodule.split_table, key=lambda r: r["path"])
    keys = ("path", "class", "partition", "fold", "group")
    lines = "\n".join(",".join(str(r[k]) for k in keys) for r in rows)
    assert (len(rows), len({r["group"] for r in rows})) == (images, groups)
    assert hashlib.sha256(lines.encode()).hexdigest() == digest


def test_relabelled_data_has_another_fingerprint():
    rows = [{"path": "a.png", "class": "no", "sha256": "1"}, {"path": "b.png", "class": "yes", "sha256": "2"}]
    relabelled = [rows[0], rows[1] | {"class": "no"}]
    assert data_fingerprint(rows) != data_fingerprint(relabelled)
    assert data_fingerprint(rows) == data_fingerprint(rows[::-1])  # the order of the rows does not count


def test_a_partition_without_a_class_is_said(phantom_root, tmp_path, caplog):
    data = shutil.copytree(phantom_root, tmp_path / "data")
    for extra in sorted((data / "no").iterdir())[1:]:  # one "no" image left: it goes to training
        extra.unlink()
    BrainMRIDataModule(str(data), image_size=32).setup()
    assert "The val partition holds no images of no: its AUROC and sensitivity are undefined" in caplog.text
    assert "The test partition holds no images of no" in caplog.text
