"""Sweep configs and launchers: the grid's size, Optuna, joblib, failed jobs, cross-validation."""

import json
import math
from datetime import datetime

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from brain_mri.run_outputs import read_csv, read_json
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
    check(
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


def log_span(log_file) -> tuple[datetime, datetime]:
    """When a job's log starts and ends (Hydra's log lines begin with [YYYY-mm-dd HH:MM:SS,mmm])."""
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in log_file.read_text().splitlines()
        if line.startswith("[")
    ]
    return stamps[0], stamps[-1]


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(phantom_root, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    check(
        run_script(
            "train.py",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "model.lr=1e-3,1e-4",
            *FAST_TRAINING,
            "trainer.max_epochs=1",
            f"data.root={phantom_root}",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    statuses = [json.loads((tmp_path / str(i) / "metrics.json").read_text())["status"] for i in (0, 1)]
    assert statuses == ["completed", "completed"]
    spans = [log_span(tmp_path / str(i) / "train.log") for i in (0, 1)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the two jobs ran at the same time
    assert len({read_json(tmp_path / str(i) / "run_info.json")["process"] for i in (0, 1)}) == 2


@pytest.mark.slow
def test_cross_validation_folds_share_the_test_partition(phantom_root, tmp_path):
    check(
        run_script(
            "train.py",
            "-m",
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
