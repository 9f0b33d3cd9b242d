"""Sweep configs and launchers: the grid's size, Optuna, failed jobs, folds run in parallel (joblib)."""

import contextlib
import io
import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from torchmetrics.functional.classification import binary_auroc

from brain_mri.config.launch import OutputFolderCheck
from brain_mri.errors import BrainMRIError
from brain_mri.report.build import build_report, compare
from brain_mri.runs.files import read_csv, read_json, write_csv, write_json
from helpers import FAST_TRAINING, PROJECT_ROOT, built_once, check, run_script


def grid_size(*overrides: str) -> int:
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=grid", *overrides], return_hydra_config=True)
    parser = OverridesParser.create()
    sweeps = parser.parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in sweeps)


def test_grid_is_the_studys_three_models_by_four_batch_sizes_by_four_learning_rates():
    assert grid_size() == 48
    assert grid_size("hydra.sweeper.params.model=resnet18") == 16


@pytest.mark.slow
def test_optuna_search_runs_two_trials(phantom_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = check(
        run_script(
            "train.py",
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "model=resnet18",
            *FAST_TRAINING,
            "trainer.max_epochs=1",
            f"data.root={phantom_root}",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    trials = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(t["val/loss_best"] for t in trials))
    assert {"model.lr", "model.weight_decay"} <= set(
        best.best_params
    )  # the rest is fixed on the command line
    assert "alembic" not in result.stdout + result.stderr  # its plugin set-up lines are silenced


def log_span(log_file) -> tuple[datetime, datetime]:
    """When a job's log starts and ends (Hydra's log lines begin with [YYYY-mm-dd HH:MM:SS,mmm])."""
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in log_file.read_text().splitlines()
        if line.startswith("[")
    ]
    return stamps[0], stamps[-1]


@pytest.fixture(scope="session")
def cv_sweep(phantom_root, tmp_path_factory):
    """A 2-fold cross-validation, its folds run side by side by joblib; built once, only read."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

    def run_folds(sweep: Path) -> None:
        overrides = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data.num_folds=2"]
        overrides += ["data.fold=0,1", *FAST_TRAINING, "trainer.max_epochs=1", f"data.root={phantom_root}"]
        check(run_script("train.py", *overrides, f"hydra.sweep.dir={sweep}"))

    return built_once(tmp_path_factory, "cv_sweep", run_folds)


def partitions(sweep: Path, name: str) -> list[set[str]]:
    return [
        {r["path"] for r in read_csv(sweep / fold / "split.csv") if r["partition"] == name} for fold in "01"
    ]


def copy_of(sweep: Path, target: Path) -> Path:
    """A copy to write into (reports, edits), without the checkpoints, which these tests do not read."""
    return shutil.copytree(sweep, target, ignore=shutil.ignore_patterns("*.ckpt"))


@pytest.mark.slow  # the folds are trained by a sweep
def test_cross_validation_folds_share_the_test_partition_and_validate_the_rest_once(cv_sweep):
    test, val = partitions(cv_sweep, "test"), partitions(cv_sweep, "val")
    assert test[0] == test[1] and not val[0] & val[1] and not (val[0] | val[1]) & test[0]
    assert len(val[0] | val[1] | test[0]) == 44  # every image is tested or validated once


@pytest.mark.slow  # the folds are trained by a sweep
def test_joblib_runs_the_folds_at_once_in_two_processes(cv_sweep):
    spans = [log_span(cv_sweep / fold / "train.log") for fold in "01"]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]
    assert len({read_json(cv_sweep / fold / "run_info.json")["process"] for fold in "01"}) == 2


@pytest.mark.slow  # the folds are trained by a sweep
def test_out_of_fold_metrics_are_the_folds_own_validation_predictions(cv_sweep, tmp_path):
    sweep = copy_of(cv_sweep, tmp_path / "cv")
    best = build_report(sweep, resamples=200)["best"]
    out_of_fold = read_json(sweep / "report" / "best.json")["out_of_fold"]
    validated = set.union(*partitions(sweep, "val"))
    assert out_of_fold["label"] == "out-of-fold" and out_of_fold["images"] == len(validated)
    predicted = [row for fold in "01" for row in read_csv(sweep / fold / "val_predictions.csv")]
    assert {row["path"] for row in predicted} == validated
    scores = torch.tensor([float(row["prob_yes"]) for row in predicted])
    labels = torch.tensor([row["class"] == "yes" for row in predicted]).long()
    assert out_of_fold["auroc/estimate"] == pytest.approx(binary_auroc(scores, labels).item(), abs=1e-6)
    assert "out-of-fold" in (sweep / "report" / "runs.md").read_text() and best is not None
    groups = {r["path"]: r["group"] for r in read_csv(sweep / "0" / "split.csv")}
    assert out_of_fold["scans"] == len({groups[path] for path in validated}) < len(validated)  # copies
    for row in out_of_fold["per_class"]:  # counted by hand from the folds' predictions
        mine = [r for r in predicted if r["class"] == row["class"]]
        assert row["images"] == len(mine)
        assert row["sensitivity"] == pytest.approx(
            sum(r["predicted_class"] == r["class"] for r in mine) / len(mine)
        )
        assert sum(v for k, v in row.items() if k.startswith("predicted ")) == len(mine)
    assert (sweep / "report" / "confusion_oof.png").is_file()


@pytest.mark.slow  # the folds are trained by a sweep
def test_a_comparison_of_the_same_predictions_finds_no_difference(cv_sweep, tmp_path):
    same = compare(cv_sweep, copy_of(cv_sweep, tmp_path / "copy"), resamples=100)
    assert same["estimate"] == same["low"] == same["high"] == 0.0
    assert same["images"] == len(set.union(*partitions(cv_sweep, "val")))
    assert same["notes"] == [] and same["first_configuration"].startswith("model=resnet18")
    assert same["settings_that_differ"] == {}  # the folds' own output folders are not settings


@pytest.mark.slow  # the folds are trained by a sweep
def test_a_comparison_names_the_settings_the_two_sides_differ_in(cv_sweep, tmp_path):
    copy = copy_of(cv_sweep, tmp_path / "copy")
    for fold in "01":  # as if the copy had been trained in its folder with the brain crop, then resumed
        recorded = (copy / fold / "config.yaml").read_text().replace(str(cv_sweep), str(copy))
        (copy / fold / "config.yaml").write_text(recorded.replace("crop: none", "crop: brain"))
        info = read_json(copy / fold / "run_info.json")
        info["resumes"] = [{"overrides": [f"resume={copy / fold}", "trainer.max_epochs=3"]}]
        write_json(copy / fold / "run_info.json", info)
    assert compare(cv_sweep, copy, resamples=10)["settings_that_differ"] == {
        "data.crop": ["none", "brain"],
        "trainer.max_epochs": [1, 3],
    }


@pytest.mark.slow  # the folds are trained by a sweep
def test_files_that_swapped_their_contents_are_other_images_and_not_paired(cv_sweep, tmp_path):
    copy = copy_of(cv_sweep, tmp_path / "copy")
    split = read_csv(copy / "0" / "split.csv")
    val_rows = [row for row in split if row["partition"] == "val"]
    first, second = val_rows[0], next(row for row in val_rows if row["sha256"] != val_rows[0]["sha256"])
    first["sha256"], second["sha256"] = second["sha256"], first["sha256"]
    write_csv(copy / "0" / "split.csv", split, tuple(split[0]))
    swapped = compare(cv_sweep, copy, resamples=100)
    assert swapped["images"] == len(set.union(*partitions(cv_sweep, "val"))) - 2
    assert "path and content" in swapped["notes"][0]


@pytest.mark.slow  # the folds are trained by a sweep
def test_a_sweep_is_not_compared_with_itself(cv_sweep):
    with pytest.raises(BrainMRIError, match="another sweep folder"):
        compare(cv_sweep, cv_sweep)


def test_a_sweep_in_which_every_job_failed_says_so_and_exits_1(phantom_root, tmp_path):
    result = run_script(
        "train.py",
        "-m",
        *FAST_TRAINING,
        f"data.root={phantom_root}",
        "model.label_smoothing=1,1.5",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1 and "2 of 2 jobs failed" in result.stderr
    said = result.stdout + result.stderr
    assert "Traceback" not in said and said.count("Error: model.label_smoothing must lie in [0, 1)") == 2
    report = build_report(tmp_path, resamples=10)  # the report says why, in its table and on its page
    assert report["best"] is None and "| error |" in (tmp_path / "report" / "runs.md").read_text()
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("model.label_smoothing must lie in [0, 1)") == 2 and "No run completed" in page


def test_a_sweep_with_no_parallel_jobs_stops_before_it_starts(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=0",
                f"hydra.sweep.dir={tmp_path / 's'}",
            ],
            return_hydra_config=True,
        )
    with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(io.StringIO()) as stderr:
        OutputFolderCheck().on_multirun_start(cfg)
    assert stopped.value.code == 1 and "hydra.launcher.n_jobs must not be 0" in stderr.getvalue()
    assert not (tmp_path / "s").exists()


def test_a_sweep_stopped_with_ctrl_c_says_the_jobs_after_it_never_started(tmp_path, capsys):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from brain_mri.config.launch import run_task
    from helpers import compose_task

    cfg = compose_task("train", tmp_path / "1")
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode, hydra_cfg.job.num = RunMode.MULTIRUN, 1

    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_task(interrupted, cfg)
    said = capsys.readouterr().err
    assert f"The sweep was interrupted in job 1 ({tmp_path / '1'}): jobs after it never started." in said
