"""Images from several sources (hospitals, scanners): their split, a held-out source, metrics per source."""

import numpy as np
import pytest

from brain_mri.data import BrainMRIDataModule
from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.errors import BrainMRIError
from brain_mri.report.build import build_report
from brain_mri.report.statistics import metrics_by_source
from brain_mri.runs.files import read_csv, read_json
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, compose_task


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two source folders of phantoms (other seeds, so no image is shared), each with no/ and yes/."""
    root = tmp_path_factory.mktemp("sources")
    for seed, source in enumerate(("hospital_a", "hospital_b")):
        generate_phantom_dataset(root / source, per_class=12, size=64, seed=seed + 5)
    return root


def test_each_image_keeps_its_source_in_the_split(two_sources):
    datamodule = BrainMRIDataModule(str(two_sources), image_size=32, sources=["hospital_a", "hospital_b"])
    datamodule.setup()
    rows = datamodule.split_table
    assert {r["source"] for r in rows} == {"hospital_a", "hospital_b"}
    assert all(r["path"].startswith(r["source"] + "/") for r in rows)
    assert datamodule.class_names == ["no", "yes"]


def test_a_held_out_source_is_the_whole_test_partition_and_nothing_else(two_sources):
    datamodule = BrainMRIDataModule(
        str(two_sources), image_size=32, sources=["hospital_a", "hospital_b"], holdout_source="hospital_b"
    )
    datamodule.setup()
    rows = datamodule.split_table
    tested = {r["path"] for r in rows if r["partition"] == "test"}
    assert tested == {r["path"] for r in rows if r["source"] == "hospital_b"}
    assert {r["partition"] for r in rows if r["source"] == "hospital_a"} == {"train", "val"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"holdout_source": "hospital_c"},
            "data.holdout_source=hospital_c is none of the sources: hospital_a, ",
        ),
        ({"sources": ["hospital_a", "nowhere"]}, "data.sources names folders that are not under"),
    ],
)
def test_a_source_that_is_not_there_is_one_message(two_sources, settings, message):
    datamodule = BrainMRIDataModule(
        str(two_sources), image_size=32, **({"sources": ["hospital_a", "hospital_b"]} | settings)
    )
    with pytest.raises(BrainMRIError, match=message):
        datamodule.setup()


def test_a_held_out_source_without_a_class_is_refused(two_sources, tmp_path):
    generate_phantom_dataset(tmp_path / "a", per_class=12, size=64, seed=1)
    generate_phantom_dataset(tmp_path / "b", per_class=12, size=64, seed=2)
    (tmp_path / "b" / "yes").rename(tmp_path / "yes_elsewhere")
    datamodule = BrainMRIDataModule(str(tmp_path), image_size=32, sources=["a", "b"], holdout_source="b")
    with pytest.raises(
        BrainMRIError, match=r"data.holdout_source=b has no images of yes: its test metrics need"
    ):
        datamodule.setup()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"holdout_source": "hospital_a"}, r"data.holdout_source=hospital_a needs sources: a data.manifest"),
        ({"sources": ["a", "a"]}, r"data.sources names a folder twice"),
        ({"sources": ["a"], "manifest": "m.csv"}, r"gives each image's source in its source column"),
    ],
)
def test_source_settings_that_cannot_work_are_refused_at_once(phantom_root, settings, message):
    with pytest.raises(BrainMRIError, match=message):
        BrainMRIDataModule(str(phantom_root), image_size=32, **settings)


def test_metrics_per_source_are_each_sources_own():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    right = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    wrong = right[:, ::-1]  # the other hospital: every image ranked the wrong way round
    found = metrics_by_source(labels, np.concatenate([right, wrong]), ["a"] * 4 + ["b"] * 4, positive=1)
    assert found["a"]["accuracy"] == found["a"]["auroc"] == 1.0 and found["a"]["images"] == 4
    assert found["b"]["accuracy"] == found["b"]["auroc"] == 0.0 and found["b"]["images"] == 4


def test_a_run_reports_the_held_out_sources_metrics_and_the_report_shows_them(two_sources, tmp_path):
    fast = [o for o in FAST_TRAINING if o != "data=synthetic"]
    run = tmp_path / "run"
    held_out = ["data.sources=[hospital_a,hospital_b]", "data.holdout_source=hospital_b"]
    train(compose_task("train", run, *fast, f"data.root={two_sources}", *held_out, "trainer.max_epochs=1"))
    per_source = read_json(run / "metrics.json")["per_source"]
    tested = [r for r in read_csv(run / "split.csv") if r["partition"] == "test"]
    assert list(per_source) == ["hospital_b"] and per_source["hospital_b"]["images"] == len(tested) == 28
    build_report(run, resamples=50)
    text = (run / "report" / "runs.md").read_text().split("test metrics per source")[1]
    assert "| hospital_b | 28 |" in text and "| hospital_a |" not in text  # 2 x (12 phantoms + 2 copies)
