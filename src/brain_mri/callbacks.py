"""The callbacks every task adds to its Trainer: files written by the global rank-zero process only,
once the Trainer has set up its processes and every process knows its rank."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

from brain_mri.run_outputs import (
    METRICS_FILE,
    failure_record,
    lock_run_folder,
    prediction_fields,
    prediction_rows,
    predictions_file,
    unlock_run_folder,
    write_csv,
    write_json,
)


class RunFolderWriter(L.Callback):
    """Calls ``write`` (the task's own files) in the global rank-zero process when the Trainer sets up.
    Before that, the first process of a second machine would believe it is rank zero. The other processes
    stop logging into the folder. A run that fails or is interrupted once started says so in its
    ``metrics.json``."""

    def __init__(self, output_dir: Path, write: Callable[[], None], lock: bool = False):
        self.output_dir, self.write, self.done = Path(output_dir).resolve(), write, False
        self.lock = lock  # training: mark the folder as being trained, so a resume cannot run beside it

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.done:  # once per task, not per stage (fit, test, predict)
            return
        self.done = True
        if trainer.is_global_zero:
            self.write()
            if self.lock:
                lock_run_folder(self.output_dir)
        else:
            stop_logging_into(self.output_dir)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.lock and stage == "predict" and trainer.is_global_zero:  # the task's last stage
            unlock_run_folder(self.output_dir)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        if trainer.is_global_zero:
            write_json(self.output_dir / METRICS_FILE, failure_record(exception))
            if self.lock:
                unlock_run_folder(self.output_dir)


def stop_logging_into(folder: Path) -> None:
    """Detach this process's log files inside ``folder``, and delete the ones only it wrote: Lightning
    relaunches each further DDP process as a Hydra job named ``<task>_ddp_process_<rank>``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            root.removeHandler(handler)
            handler.close()
            if "_ddp_process_" in Path(handler.baseFilename).name:
                Path(handler.baseFilename).unlink(missing_ok=True)


class PredictionsWriter(BasePredictionWriter):
    """``predictions.csv`` (and ``val_predictions.csv``) from ``Trainer.predict`` over the data module's
    ``predict_partitions``: made on the accelerator at the run's precision, in whichever process predicts
    (also under ddp_spawn, where predictions are not returned to the main process), written by global
    rank zero. A model that averages several models or views also returns their spread, written too."""

    def __init__(self, output_dir: Path):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if not trainer.is_global_zero:
            return
        partitions = trainer.datamodule.predict_partitions
        per_loader = predictions if len(partitions) > 1 else [predictions]  # Lightning nests several
        for partition, batches in zip(partitions, per_loader, strict=True):
            self.write(trainer, pl_module, partition, batches)

    def write(self, trainer, pl_module, partition: str, batches: list) -> None:
        """One partition's file; batches are probabilities, or (probabilities, spread) from an ensemble."""
        spread = None
        if isinstance(batches[0], tuple):
            spread = torch.cat([spreads for _, spreads in batches]).float().cpu()
            batches = [probabilities for probabilities, _ in batches]
        probabilities = torch.cat(batches).float().cpu()
        class_names = list(pl_module.hparams.class_names)
        files = trainer.datamodule.partition_files(partition)
        rows = prediction_rows(files, probabilities, class_names, spread)
        fields = prediction_fields(class_names, spread is not None)
        write_csv(self.output_dir / predictions_file(partition), rows, fields)


class EarlyStopping(LightningEarlyStopping):
    """Lightning's EarlyStopping, except that the configured patience wins over the one saved in the
    checkpoint a run resumes from, so ``resume=<run> callbacks.early_stopping.patience=20`` waits longer."""

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "patience": self.patience})


def task_callbacks(
    configured: list, output_dir: Path, write: Callable[[], None], lock: bool = False
) -> list[L.Callback]:
    """The configured callbacks plus the ones that write the task's files (``lock``: training's)."""
    return [*configured, RunFolderWriter(output_dir, write, lock), PredictionsWriter(output_dir)]
