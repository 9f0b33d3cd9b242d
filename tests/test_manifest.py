"""A data set listed in a manifest (path,label[,group][,source]) instead of class folders."""

import csv
import shutil

import pytest

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.manifest import read_manifest
from brain_mri.errors import BrainMRIError
from brain_mri.runs.files import read_csv
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, compose_task


def write_manifest(path, rows, columns=("path", "label", "group", "source")):
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def phantom_rows(root, patients=10):
    """Every phantom under ``root``, as a manifest row: distinct phantoms in ``patients`` groups per
    class, and the planted copies in a group of their own (detection must join them to their original)."""
    rows = []
    for label in ("no", "yes"):
        for number, image in enumerate(sorted((root / label).iterdir())):
            copy = "copy_of" in image.name or "resized" in image.name
            group = f"{label}-copies" if copy else f"{label}-patient{number % patients}"
            rows.append({"path": f"{label}/{image.name}", "label": label, "group": group, "source": "A"})
    return rows


@pytest.fixture
def listed(phantom_root, tmp_path):
    data = shutil.copytree(phantom_root, tmp_path / "data")
    return write_manifest(data / "manifest.csv", phantom_rows(data))


def test_a_given_group_never_crosses_partitions_and_detected_copies_join_it(listed, caplog):
    datamodule = BrainMRIDataModule("/not/used", image_size=32, manifest=str(listed))
    datamodule.setup()
    assert datamodule.root == listed.parent
    given = {r["path"]: r["group"] for r in read_csv(listed)}
    partitions_of: dict[str, set] = {}
    for row in datamodule.split_table:
        partitions_of.setdefault(given[row["path"]], set()).add(row["partition"])
    # the copies' own group joined their originals' patients: all of them one group, one partition
    assert all(len(partitions) == 1 for partitions in partitions_of.values())
    split_group = {r["path"]: r["group"] for r in datamodule.split_table}
    assert split_group["no/no_copy_of_000.png"] == split_group["no/no_000.png"]
    assert split_group["no/no_000.png"] == split_group["no/no_010.png"]  # patient 0 of "no"
    assert "Copies of one scan are listed under the groups no-copies, no-patient0" in caplog.text


def test_a_manifest_is_checked_whole_before_anything_is_decoded(phantom_root, tmp_path):
    data = shutil.copytree(phantom_root, tmp_path / "data")
    rows = phantom_rows(data)
    rows[0] |= {"path": "no/missing.png"}
    rows[1] |= {"label": ""}
    rows[2] |= {"group": ""}
    rows.append(dict(rows[3]))  # listed twice
    rows[4] |= {"label": "yes"}  # its patient group now holds both labels
    rows.append(
        dict(rows[5]) | {"path": rows[5]["path"].replace("/", "/./")}
    )  # the same file, spelt otherwise
    manifest = write_manifest(data / "manifest.csv", rows)
    with manifest.open("a") as file:
        file.write("no/extra.png,no,no-patient9,A,surplus\n")  # one cell too many (and no such file)
    cache = tmp_path / "cache"
    datamodule = BrainMRIDataModule("/not/used", image_size=32, manifest=str(manifest), cache_dir=str(cache))
    with pytest.raises(BrainMRIError) as refused:
        datamodule.setup()
    said = str(refused.value)
    assert "nothing was read" in said
    for problem in (
        "files that do not exist (2): no/missing.png, no/extra.png",
        "rows without a label (1): line 3",
        "blank group cells (1): line 4",
        f"files listed more than once (2): {rows[3]['path']} (lines 5, {len(rows)}), {rows[5]['path']}",
        f"rows with more cells than columns (1): line {len(rows) + 2}",
        "groups whose images have more than one label",
    ):
        assert problem in said, problem
    assert not cache.exists()


def test_labels_outside_the_given_classes_and_missing_columns_are_named(listed):
    with pytest.raises(
        BrainMRIError, match=r"labels not in data.class_names \(no, tumour\) \(22\): yes .* and 12 more"
    ):
        read_manifest(listed, ["no", "tumour"])
    bare = write_manifest(listed.parent / "bare.csv", [{"path": "no/no_000.png"}], columns=("path",))
    with pytest.raises(BrainMRIError, match=r"needs the columns path, label .* it has path\."):
        read_manifest(bare)


def test_training_from_a_manifest_records_it_and_its_groups(listed, tmp_path):
    run = tmp_path / "run"
    fast = [o for o in FAST_TRAINING if o != "data=synthetic"]  # a real set's config, listed
    train(compose_task("train", run, *fast, f"data.manifest={listed}", "trainer.max_epochs=1"))
    split = read_csv(run / "split.csv")
    # 10 patients per class, two of which the copies' own group (copies of 000 and 001) joins into one
    assert len(split) == 44 and len({r["group"] for r in split}) == 18
    assert f"manifest: {listed}" in (run / "config.yaml").read_text()


def test_a_class_of_a_few_images_is_said_as_a_possible_typo(listed, caplog):
    rows = read_csv(listed)
    rows[0] |= {"label": "No", "group": "no-patient-alone"}  # a typo (alone in its group)
    typo = write_manifest(listed.parent / "typo.csv", rows)
    assert read_manifest(typo).files[0].class_name == "No"
    assert "the classes No (1) hold fewer than 5 images: a typo in a label makes a class" in caplog.text
