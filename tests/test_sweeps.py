"""Sweep configs and launchers: the grid's size, Optuna, failed jobs, folds run in parallel (joblib)."""

import contextlib
import io
import json
import math
import shutil
from datetime import datetime

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from torchmetrics.functional.classification import binary_auroc

from brain_mri.errors import BrainMRIError
from brain_mri.launch import OutputFolderCheck
from brain_mri.report import build_report, compare
from brain_mri.run_outputs import read_csv, read_json, write_csv, write_json
from helpers import FAST_TRAINING, PROJECT_ROOT, check, run_script


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


@pytest.mark.slow
def test_cross_validation_folds_run_in_parallel_and_share_the_test_partition(phantom_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    check(
        run_script(
            "train.py",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "data.num_folds=2",
            "data.fold=0,1",
            *FAST_TRAINING,
            "trainer.max_epochs=1",
            f"data.root={phantom_root}",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    splits = [read_csv(tmp_path / str(i) / "split.csv") for i in (0, 1)]
    test = [{r["path"] for r in s if r["partition"] == "test"} for s in splits]
    val = [{r["path"] for r in s if r["partition"] == "val"} for s in splits]
    assert test[0] == test[1] and not val[0] & val[1] and not (val[0] | val[1]) & test[0]
    assert len(val[0] | val[1] | test[0]) == 44  # every image is tested or validated once
    spans = [log_span(tmp_path / str(i) / "train.log") for i in (0, 1)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # joblib ran the two folds at once
    assert len({read_json(tmp_path / str(i) / "run_info.json")["process"] for i in (0, 1)}) == 2

    # out-of-fold: each fold's best checkpoint predicted its own validation images
    best = build_report(tmp_path, resamples=200)["best"]
    out_of_fold = read_json(tmp_path / "report" / "best.json")["out_of_fold"]
    assert out_of_fold["label"] == "out-of-fold" and out_of_fold["images"] == len(val[0] | val[1])
    predicted = [row for i in (0, 1) for row in read_csv(tmp_path / str(i) / "val_predictions.csv")]
    assert {row["path"] for row in predicted} == val[0] | val[1]
    scores = torch.tensor([float(row["prob_yes"]) for row in predicted])
    labels = torch.tensor([row["class"] == "yes" for row in predicted]).long()
    assert out_of_fold["auroc/estimate"] == pytest.approx(binary_auroc(scores, labels).item(), abs=1e-6)
    assert "out-of-fold" in (tmp_path / "report" / "runs.md").read_text() and best is not None
    copy = tmp_path.parent / f"{tmp_path.name}_copy"  # the same predictions: paired, no difference
    shutil.copytree(tmp_path, copy)
    same = compare(tmp_path, copy, resamples=100)
    assert same["estimate"] == same["low"] == same["high"] == 0.0 and same["images"] == out_of_fold["images"]
    assert same["notes"] == [] and same["first_configuration"].startswith("model=resnet18")
    assert same["settings_that_differ"] == {}  # the folds' own output folders are not settings
    for fold in (0, 1):  # as if the copy had been trained in its folder with the brain crop, then resumed
        recorded = (copy / str(fold) / "config.yaml").read_text().replace(str(tmp_path), str(copy))
        (copy / str(fold) / "config.yaml").write_text(recorded.replace("crop: none", "crop: brain"))
        info = read_json(copy / str(fold) / "run_info.json")
        info["resumes"] = [{"overrides": [f"resume={copy / str(fold)}", "trainer.max_epochs=3"]}]
        write_json(copy / str(fold) / "run_info.json", info)
    assert compare(tmp_path, copy, resamples=10)["settings_that_differ"] == {
        "data.crop": ["none", "brain"],
        "trainer.max_epochs": [1, 3],
    }
    # two files that swapped their contents under the same names are other images: not paired
    split = read_csv(copy / "0" / "split.csv")
    val_rows = [row for row in split if row["partition"] == "val"]
    first, second = val_rows[0], next(row for row in val_rows if row["sha256"] != val_rows[0]["sha256"])
    first["sha256"], second["sha256"] = second["sha256"], first["sha256"]
    write_csv(copy / "0" / "split.csv", split, tuple(split[0]))
    swapped = compare(tmp_path, copy, resamples=100)
    assert swapped["images"] == out_of_fold["images"] - 2 and "path and content" in swapped["notes"][0]
    with pytest.raises(BrainMRIError, match="another sweep folder"):
        compare(tmp_path, tmp_path)


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
