"""Interruptions and reproducibility: a killed run resumes to the same result; reruns repeat exactly."""

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from brain_mri.config.settings import check_train_settings
from brain_mri.data.split import data_fingerprint
from brain_mri.errors import BrainMRIError
from brain_mri.report.build import read_run
from brain_mri.runs.checkpoints import AtomicCheckpointIO, load_checkpoint
from brain_mri.runs.files import read_csv, read_json, write_csv
from brain_mri.runs.resume import (
    LOCK_FILE,
    MOVED_MODULES,
    RunFolderLocked,
    check_patience_left,
    check_run_folder,
    is_being_trained,
    keep_epochs_up_to,
    lock_run_folder,
)
from brain_mri.tasks.evaluate import evaluate
from brain_mri.tasks.train import train, write_run_folder
from brain_mri.training.callbacks import EarlyStopping
from helpers import FAST_TRAINING, PROJECT_ROOT, built_once, compose_task

# Augmented (so the restored random state matters) and fp32. Which epoch is best depends on the machine
# and the package versions: a test that needs a certain best plants it (with_planted_state).
DETERMINISTIC = [
    *FAST_TRAINING,
    "augmentation=light",
    "trainer.max_epochs=4",
    "trainer.precision=32-true",
    "trainer.deterministic=true",
    "callbacks.early_stopping.patience=10",  # saved in its checkpoints; never stops these 4 epochs
]
RESULTS = ("val/loss_best", "best_epoch", "epochs_trained", "test/loss", "test/auroc", "test/accuracy")


def val_losses(run):
    return [float(r["val/loss"]) for r in read_csv(run / "csv" / "metrics.csv") if r["val/loss"]]


def epochs_trained_by_other_processes(run, pid: int) -> set[int]:
    """The epochs whose training loss TensorBoard event files of processes other than ``pid`` hold."""
    epochs = set()
    for events_file in (run / "tensorboard").glob("events.out.tfevents.*"):
        if events_file.name.split(".")[-2] != str(pid):
            events = EventAccumulator(str(events_file))
            events.Reload()
            if "train/loss" in events.Tags()["scalars"]:
                steps = {e.step for e in events.Scalars("train/loss")}
                epochs |= {int(e.value) for e in events.Scalars("epoch") if e.step in steps}
    return epochs


PLANTED_BEST = -1.0  # below any cross-entropy: no epoch can beat it


def with_planted_state(checkpoint: Path, target: Path, best: float | None = None, waited: int | None = None):
    """A copy of ``checkpoint`` (a last.ckpt) whose best validation loss so far is ``best`` (in the best
    checkpoint's callback state, early stopping's and the model's val/loss_best) and whose early stopping
    has waited ``waited`` epochs: the state a case needs, instead of hoping training produces it."""
    state = dict(load_checkpoint(checkpoint))
    score = None if best is None else torch.tensor(best)
    callbacks = {}
    for key, values in state["callbacks"].items():
        values = dict(values)
        if key.startswith("EarlyStopping"):
            values |= {} if score is None else {"best_score": score}
            values |= {} if waited is None else {"wait_count": waited}
        elif values.get("monitor") == "val/loss" and score is not None:
            values |= {"best_model_score": score, "kth_value": score, "current_score": score}
            values["best_k_models"] = dict.fromkeys(values["best_k_models"], score)
        callbacks[key] = values
    state["callbacks"] = callbacks
    if score is not None:
        state["state_dict"] = {**state["state_dict"], "val_loss_best.min_value": score}
    AtomicCheckpointIO().save_checkpoint(state, target)
    return target


@pytest.fixture(scope="session")
def uninterrupted(phantom_root, tmp_path_factory):
    """One deterministic run, trained in this process, read by the tests of every xdist worker."""
    return built_once(
        tmp_path_factory,
        "uninterrupted",
        lambda run: train(compose_task("train", run, *DETERMINISTIC, f"data.root={phantom_root}")),
    )


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_next_epoch_to_the_same_result(phantom_root, uninterrupted, tmp_path):
    """The killed run and the uninterrupted one are two runs of one config and seed, in two processes:
    their split and every epoch before the kill agree too (runs repeat exactly). Killed after epoch 1 or
    2, whichever epoch was best."""
    run = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "train.py", *DETERMINISTIC, f"data.root={phantom_root}", f"hydra.run.dir={run}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, last = time.monotonic() + 180, run / "checkpoints" / "last.ckpt"
    seen = None
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists() and last.stat().st_mtime_ns != seen:
            seen = last.stat().st_mtime_ns
            if load_checkpoint(last)["epoch"] >= 1:
                break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # no chance to clean up
    process.wait()
    latest = load_checkpoint(last)["epoch"]
    assert 1 <= latest < 3, "the run was not killed between its second epoch and its end"
    assert (run / "split.csv").read_bytes() == (uninterrupted / "split.csv").read_bytes()
    config = (run / ".hydra" / "config.yaml").read_text()
    assert (run / LOCK_FILE).is_file() and not is_being_trained(run)  # released when the process died

    train(compose_task("train", run, f"resume={run}"))  # here: nothing carries over from the killed process
    assert not is_being_trained(run)
    assert epochs_trained_by_other_processes(run, process.pid) == set(range(latest + 1, 4))
    resumed, whole = read_json(run / "metrics.json"), read_json(uninterrupted / "metrics.json")
    for name in RESULTS:
        assert resumed[name] == pytest.approx(whole[name], abs=1e-6), name
    assert val_losses(run) == pytest.approx(val_losses(uninterrupted), abs=1e-6)  # every epoch, logged once
    assert (run / "predictions.csv").read_text() == (uninterrupted / "predictions.csv").read_text()

    # A resume may train for longer; it keeps the run's recorded config and appends to run_info.json.
    train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))
    assert read_json(run / "metrics.json")["epochs_trained"] == 5 and len(val_losses(run)) == 5
    assert (run / ".hydra" / "config.yaml").read_text() == config
    assert "max_epochs: 4" in (run / "config.yaml").read_text()
    resumes = read_json(run / "run_info.json")["resumes"]
    assert [r["overrides"] for r in resumes] == [[f"resume={run}"], [f"resume={run}", "trainer.max_epochs=5"]]
    assert [r["first_epoch"] for r in resumes] == [latest + 1, 4]

    with pytest.raises(BrainMRIError, match=r"nothing is left.*trainer\.max_epochs=15"):  # and not recorded
        train(compose_task("train", run, f"resume={run}"))
    assert len(read_json(run / "run_info.json")["resumes"]) == 2


def test_sigterm_is_an_interruption_said_in_one_line_and_the_run_resumes(phantom_root, tmp_path, capsys):
    from brain_mri.config.launch import run_task

    run = tmp_path / "run"
    cfg = compose_task(
        "train", run, *FAST_TRAINING, "+callbacks.term._target_=helpers.TermAt", "+callbacks.term.epoch=1"
    )
    with pytest.raises(SystemExit) as exited:
        run_task(train, cfg)
    assert exited.value.code == 128 + signal.SIGTERM  # not 0: a stop asked for is not a success
    assert read_json(run / "metrics.json") == {
        "status": "interrupted",
        "error": "SIGTERM: the process was asked to stop",
    }
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [f"Interrupted by SIGTERM (its state is in {run})."]
    assert not is_being_trained(run) and check_run_folder(run)  # resume= takes it (resumes: tested above)


def test_a_full_disk_is_one_message_with_the_space_needed_and_leaves_whole_files(
    phantom_root, tmp_path, capsys, monkeypatch
):
    from lightning.fabric.plugins import TorchCheckpointIO

    from brain_mri.config.launch import run_task

    saved = []
    original = TorchCheckpointIO.save_checkpoint

    def fills_the_disk(self, checkpoint, path, storage_options=None):
        saved.append(path)
        if len(saved) > 2:  # the checkpoints of epoch 0 are written, the next fill the disk half-way
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", fills_the_disk)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        run_task(train, compose_task("train", run, *FAST_TRAINING, f"data.root={phantom_root}"))
    said = capsys.readouterr().err.strip()
    assert exited.value.code == 1 and said.count("\n") == 0 and "Traceback" not in said
    assert said.startswith(f"Error: The disk is full: {run / 'checkpoints'}")
    assert re.search(r"cannot be written \([0-9.]+ MB free, and it needs about [0-9.]+ MB\)", said)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0  # the last whole one
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no half file
    assert read_json(run / "metrics.json")["status"] == "failed"


def test_a_resume_may_raise_the_patience_saved_in_its_checkpoint():
    waited = EarlyStopping(monitor="val/loss", patience=5)
    waited.wait_count = 5
    resumed = EarlyStopping(monitor="val/loss", patience=20)
    resumed.load_state_dict(waited.state_dict())
    assert resumed.patience == 20 and resumed.wait_count == 5


def test_a_resume_refuses_a_run_that_is_still_training(uninterrupted, tmp_path):
    assert not is_being_trained(uninterrupted)  # a finished run holds no lock
    run = shutil.copytree(uninterrupted, tmp_path / "run")  # a copy: other workers read the original
    lock = lock_run_folder(run)  # as if another process were still training it
    try:
        with pytest.raises(BrainMRIError, match=r"is still being trained by another process"):
            train(compose_task("train", run, f"resume={run}"))
        with pytest.raises(RunFolderLocked, match=r"is being trained by another process"):
            lock_run_folder(run)  # a second training that got past that check in the meantime
    finally:
        lock.release()
    assert not is_being_trained(run)


def test_a_copied_run_folder_resumes_where_it_is_now(uninterrupted, tmp_path):
    run = shutil.copytree(uninterrupted, tmp_path / "copy")
    last = run / "checkpoints" / "last.ckpt"
    with_planted_state(last, last, best=PLANTED_BEST)  # no resumed epoch can beat the best so far
    # a best checkpoint of the epoch after last.ckpt, as a process killed between the two saves leaves it
    orphan = load_checkpoint(last) | {"epoch": 4}
    AtomicCheckpointIO().save_checkpoint(orphan, run / "checkpoints" / "epoch004-val_loss0.1000.ckpt")
    config = (run / "config.yaml").read_text()  # as a run saved before the package's current layout
    for old, new in MOVED_MODULES.items():
        config = config.replace(new, old)
    assert "_target_: brain_mri.callbacks.EarlyStopping" in config
    (run / "config.yaml").write_text(config)
    train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))
    resumed, original = read_json(run / "metrics.json"), read_json(uninterrupted / "metrics.json")
    kept = [p.name for p in sorted((run / "checkpoints").glob("*.ckpt"))]
    assert kept == [Path(resumed["best_checkpoint"]).name, "last.ckpt"]  # the resumed epoch 4 is no best
    assert resumed["epochs_trained"] == 5 and Path(resumed["best_checkpoint"]).parent == run / "checkpoints"
    # the best so far came along with the copy (Lightning drops it for another folder)
    assert resumed["best_epoch"] == original["best_epoch"]
    assert resumed["val/loss_best"] == pytest.approx(PLANTED_BEST)
    assert original["epochs_trained"] == 4  # the original is untouched
    assert len(val_losses(run)) == 5 and "resumes" not in read_json(uninterrupted / "run_info.json")
    # a plain resume goes on with the max_epochs the last resume set, not with config.yaml's 4
    with pytest.raises(BrainMRIError, match=r"already trained 5 epochs and trainer\.max_epochs=5:"):
        train(compose_task("train", run, f"resume={run}"))
    again = shutil.move(run, tmp_path / "moved")  # once resumed elsewhere, its checkpoints name the copy
    train(compose_task("train", again, f"resume={again}", "trainer.max_epochs=6"))
    moved = read_json(again / "metrics.json")
    assert moved["best_epoch"] == original["best_epoch"] and len(val_losses(again)) == 6
    assert moved["val/loss_best"] == pytest.approx(PLANTED_BEST)


def test_a_new_run_from_another_runs_checkpoint_has_a_best_of_its_own(
    uninterrupted, phantom_root, tmp_path, caplog
):
    """Lightning keeps no best checkpoint of another folder: the logged val/loss_best and early stopping
    start anew too. The checkpoint carries a best no epoch can beat: were it kept, early stopping (patience
    1) would end the run after its first epoch, and val/loss_best would log that best."""
    source = with_planted_state(
        uninterrupted / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt", best=PLANTED_BEST
    )
    run = tmp_path / "new"
    overrides = [*DETERMINISTIC, f"data.root={phantom_root}", "trainer.max_epochs=6", f"ckpt_path={source}"]
    caplog.set_level(logging.INFO, logger="brain_mri")
    with warnings.catch_warnings():  # Lightning's alarming "dirpath has changed" is said plainly instead
        warnings.filterwarnings("error", message="The dirpath has changed")
        train(compose_task("train", run, *overrides, "callbacks.early_stopping.patience=1"))
    assert "best checkpoint, val/loss_best and early stopping count from this run's" in caplog.text
    summary, losses = read_json(run / "metrics.json"), val_losses(run)
    logged = read_csv(run / "csv" / "metrics.csv")
    logged_best = [float(r["val/loss_best"]) for r in logged if r["val/loss_best"]]
    assert summary["epochs_trained"] == 6 and len(losses) == 2  # epochs 4 and 5: no early stop after 4
    assert summary["best_epoch"] == 4 + losses.index(min(losses))
    assert Path(summary["best_checkpoint"]).parent == run / "checkpoints"
    assert logged_best == [pytest.approx(losses[0]), pytest.approx(min(losses))]
    assert summary["val/loss_best"] == pytest.approx(min(losses)) and min(losses) > PLANTED_BEST


def test_a_run_folder_of_links_to_another_run_is_not_resumed(uninterrupted, tmp_path):
    run = shutil.copytree(uninterrupted, tmp_path / "linked")
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(uninterrupted / "metrics.json")  # as cp -s makes them
    with pytest.raises(BrainMRIError, match=r"metrics\.json is a link to .*cp -a, not cp -s"):
        train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))
    (run / "metrics.json").unlink()
    (run / "metrics.json").hardlink_to(uninterrupted / "metrics.json")  # as cp -l makes them
    with pytest.raises(BrainMRIError, match=r"metrics\.json is hard-linked to another file"):
        train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))


def test_a_resume_drops_the_logged_rows_it_redoes_and_the_test_row(tmp_path):
    log = tmp_path / "metrics.csv"
    rows = [  # the learning rate is logged at the first step of each epoch, without an epoch
        ("", "0", "", "0.001", ""),
        ("0", "7", "0.7", "", ""),
        ("", "8", "", "0.001", ""),
        ("1", "15", "0.6", "", ""),
        ("", "16", "", "0.001", ""),
        ("2", "23", "0.5", "", ""),
        ("0", "23", "", "", "0.9"),  # ddp_spawn tests at epoch 0
    ]
    fields = ("epoch", "step", "val/loss", "lr-Adam", "test/auroc")
    write_csv(log, [dict(zip(fields, row, strict=True)) for row in rows], fields)
    keep_epochs_up_to(log, 1, first_step=16)  # epoch 2 is redone from step 16
    assert [(r["epoch"], r["step"]) for r in read_csv(log)] == [("", "0"), ("0", "7"), ("", "8"), ("1", "15")]


def test_a_resumed_run_reads_as_incomplete_until_it_ends_again(uninterrupted, tmp_path):
    """Its old metrics.json would call a resume killed later "completed", with the old epochs."""
    run = shutil.copytree(uninterrupted, tmp_path / "run", ignore=shutil.ignore_patterns("*.ckpt"))
    write_run_folder(
        run,
        OmegaConf.create(),
        SimpleNamespace(bad_files=[], near_duplicates=[]),
        {"overrides": [], "first_epoch": 4, "first_step": 12, "checkpoints_removed": []},
    )
    assert not (run / "metrics.json").exists() and read_run(run, tmp_path)["status"] == "incomplete"
    assert len(read_json(run / "run_info.json")["resumes"]) == 1


def test_early_stopping_has_ended_a_run_only_after_epochs_without_a_better_one():
    def last(wait_count: int) -> dict:
        states = {"EarlyStopping{'monitor': 'val/loss'}": {"wait_count": wait_count}}
        return {"epoch": 3, "callbacks": states | {"ModelCheckpoint{}": {"best_model_path": "/r/c/e.ckpt"}}}

    check_patience_left(last(0), "/r/checkpoints/last.ckpt", 0)  # patience 0, its last epoch was better
    check_patience_left(last(1), "/r/checkpoints/last.ckpt", 2)
    with pytest.raises(BrainMRIError, match=r"ckpt_path=/r/checkpoints/e\.ckpt\.$"):
        check_patience_left(last(2), "/r/checkpoints/last.ckpt", 2)


def test_a_resume_refuses_changes_to_the_runs_settings(uninterrupted):
    overrides = (f"resume={uninterrupted}", "model.lr=0.1", "data=synthetic")
    with pytest.raises(BrainMRIError, match=r"cannot change: data, model\.lr"):
        train(compose_task("train", uninterrupted, *overrides))


def test_a_schedule_is_not_stretched_by_a_resume_or_a_new_run(phantom_root, tmp_path):
    run = tmp_path / "run"
    train(compose_task("train", run, *FAST_TRAINING, f"data.root={phantom_root}", "scheduler=onecycle"))
    with pytest.raises(BrainMRIError, match=r"onecycle schedule made for trainer\.max_epochs=2"):
        train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=3"))
    assert read_json(run / "metrics.json")["status"] == "completed"  # the finished run is left as it was
    again = [*FAST_TRAINING, f"data.root={phantom_root}", "scheduler=onecycle", "trainer.max_epochs=3"]
    with pytest.raises(BrainMRIError, match=r"cannot continue with trainer\.max_epochs=3"):
        check_train_settings(
            compose_task("train", tmp_path / "new", *again, f"ckpt_path={run}/checkpoints/last.ckpt")
        )


def test_run_folder_records_what_is_needed_to_repeat_it(uninterrupted, phantom_root, tmp_path):
    info = read_json(uninterrupted / "run_info.json")
    assert info["packages"]["torch"] == metadata.version("torch")
    assert info["packages"]["lightning"] == metadata.version("lightning")
    assert re.fullmatch("[0-9a-f]{40}", info["git_commit"]) and isinstance(info["git_dirty"], bool)
    assert info["data_root"] == str(phantom_root)
    assert info["data_images"] == 44
    config = (uninterrupted / "config.yaml").read_text()
    assert "${" not in config and "deterministic: true" in config


def test_the_data_fingerprint_changes_with_any_file_and_only_then(uninterrupted):
    rows = read_csv(uninterrupted / "split.csv")
    fingerprint = read_json(uninterrupted / "run_info.json")["data_fingerprint"]
    assert data_fingerprint(list(reversed(rows))) == fingerprint  # order does not matter
    edited = [dict(r) for r in rows]
    edited[3]["sha256"] = "0" * 64
    renamed = [dict(r) for r in rows]
    renamed[3]["path"] = "no/renamed.png"
    assert (
        len({fingerprint, data_fingerprint(edited), data_fingerprint(renamed), data_fingerprint(rows[1:])})
        == 4
    )


def test_resume_needs_a_last_checkpoint(uninterrupted, tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(BrainMRIError, match=r"no checkpoints/last\.ckpt to resume from: it stopped before"):
        train(compose_task("train", tmp_path, f"resume={tmp_path}"))
    run = shutil.copytree(uninterrupted, tmp_path / "run", ignore=shutil.ignore_patterns("last.ckpt"))
    (run / ".hydra").mkdir()  # as train.py records its command line
    (run / ".hydra" / "overrides.yaml").write_text(
        "- data=synthetic\n- data.image_size=32\n- hydra.run.dir=x\n"
    )
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    again = "python train.py data=synthetic data.image_size=32"
    suggested = f"{again} init_from={best}; or start it again: {again}"
    killed = "killed in its first epoch, between saving its best checkpoint and last.ckpt"
    with pytest.raises(BrainMRIError, match=rf"{killed}.* or was deleted\. .*: {re.escape(suggested)}$"):
        train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))
    (run / "checkpoints" / "last.ckpt").write_bytes(
        next((run / "checkpoints").glob("epoch*.ckpt")).read_bytes()
    )
    (run / "csv" / "metrics.csv").write_text("epoch,step\n0,7,extra\n")  # cut off, then appended to
    with pytest.raises(
        BrainMRIError, match=r"metrics\.csv is damaged: line 2 has more fields than its header"
    ):
        train(compose_task("train", run, f"resume={run}", "trainer.max_epochs=5"))


def test_a_run_that_early_stopping_ended_goes_on_only_with_more_patience(uninterrupted, tmp_path):
    """Its wait count is 3, as after three epochs that failed to beat an earlier one: with patience 3 it
    would have stopped."""
    run = shutil.copytree(uninterrupted, tmp_path / "run")
    with_planted_state(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt", waited=3)
    with pytest.raises(
        BrainMRIError,
        match=r"Early stopping ended .*run after epoch 3: its last 3 epochs brought no better validation",
    ):
        train(
            compose_task(
                "train", run, f"resume={run}", "trainer.max_epochs=6", "callbacks.early_stopping.patience=3"
            )
        )
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    with pytest.raises(
        BrainMRIError, match=rf"to test its best checkpoint: python eval\.py ckpt_path={best}\.$"
    ):
        train(
            compose_task(
                "train", run, f"resume={run}", "trainer.max_epochs=6", "callbacks.early_stopping.patience=2"
            )
        )
    assert "resumes" not in read_json(run / "run_info.json")  # refused before anything was written


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(3)}, target)

    def crash_midway(checkpoint, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if the process died while writing

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_eval_refuses_a_split_whose_images_changed(trained_run, phantom_root, tmp_path):

    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    test_files = [r["path"] for r in read_csv(trained_run / "split.csv") if r["partition"] == "test"]
    (data / test_files[0]).write_bytes((data / test_files[1]).read_bytes())  # edited
    (data / test_files[1]).unlink()  # removed
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    with pytest.raises(BrainMRIError, match="no longer match") as refused:
        evaluate(compose_task("eval", tmp_path / "e", f"ckpt_path={checkpoint}", f"data.root={data}"))
    assert "1 missing, 1 changed" in str(refused.value) and test_files[0] in str(refused.value)
