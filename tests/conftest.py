"""Shared fixtures: a small phantom data set, the real data set when present, a trained run, a sweep."""

from __future__ import annotations

import os
from pathlib import Path

# pytest -n auto runs one worker per core: one compute thread each (inherited by the processes tests
# start) instead of every worker's threads competing for every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from brain_mri.data.synthetic import generate_phantom_dataset
from brain_mri.tasks.train import train
from helpers import FAST_TRAINING, REAL_DATA, built_once, check, compose_task, run_script


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """20 phantoms per class plus 2 planted duplicates per class (a byte copy and a resized JPEG). One
    folder for every xdist worker (no test writes into it), so runs shared between workers name it."""
    phantoms = built_once(
        tmp_path_factory,
        "phantoms",
        lambda folder: generate_phantom_dataset(folder / "data", per_class=20, size=64),
    )
    return phantoms / "data"


@pytest.fixture(scope="session")
def real_root() -> Path:
    if not (REAL_DATA / "yes").is_dir():
        pytest.skip(f"the real data set is not at {REAL_DATA} (set BRAIN_MRI_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, phantom_root) -> Path:
    """One training run on phantoms (the task, in this process), shared by the tests that read a run."""
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_task("train", run_dir, *FAST_TRAINING, f"data.root={phantom_root}", "gallery_images=64"))
    return run_dir


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory, phantom_root) -> Path:
    """A 2x2 sweep of one epoch in which the two jobs with batch size 0 fail: the sweep must still finish.
    Built once for all xdist workers (the tests only read it)."""

    def run_sweep(sweep: Path) -> None:
        overrides = [
            "-m",
            *FAST_TRAINING,
            f"data.root={phantom_root}",
            "trainer.max_epochs=1",
            "model.lr=1e-3,1e-4",
            "data.batch_size=8,0",
            "gallery_images=64",  # the report page shows it
        ]
        check(run_script("train.py", *overrides, f"hydra.sweep.dir={sweep}"))

    return built_once(tmp_path_factory, "sweep", run_sweep)
