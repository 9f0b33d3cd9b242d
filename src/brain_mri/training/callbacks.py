"""The callbacks every task adds to its Trainer: files written by the global rank-zero process only,
once the Trainer has set up its processes and every process knows its rank."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from brain_mri.errors import BrainMRIError
from brain_mri.models.explain import explanation
from brain_mri.report import figures
from brain_mri.runs.checkpoints import keeps_best_checkpoints
from brain_mri.runs.files import (
    LAST_CHECKPOINT,
    METRICS_FILE,
    failure_record,
    prediction_fields,
    prediction_rows,
    predictions_file,
    write_csv,
    write_json,
)
from brain_mri.runs.resume import RunFolderLocked, lock_run_folder

log = logging.getLogger(__name__)

EPOCHS_TRAINED = "epochs_trained"  # the key under which the fit's epoch count reaches the main process


class RunFolderWriter(L.Callback):
    """Calls ``write`` (the task's own files) in the global rank-zero process when the Trainer sets up the
    task's first stage (``fit`` for training, which also locks the folder so that a resume cannot run
    beside it). Before that, the first process of a second machine would believe it is rank zero. The
    other processes stop logging into the folder. A run that fails or is interrupted once started says so
    in its ``metrics.json``.

    Under ddp_spawn and ddp_fork the fit runs in worker processes, which hand back to the main process
    their ``callback_metrics`` but nothing else: the writer's first stage ran there, and the epoch count
    travels in ``callback_metrics`` (``EPOCHS_TRAINED``)."""

    def __init__(self, output_dir: Path, write: Callable[[], None], first_stage: str):
        self.output_dir, self.write, self.first_stage = Path(output_dir).resolve(), write, first_stage
        self.lock = first_stage == "fit"
        self.held: FileLock | None = None  # the run folder's lock, in the process that trains

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            stop_logging_into(self.output_dir)
        elif stage == self.first_stage:  # once per task, not per stage (fit, test, predict)
            if self.lock:  # first: a folder another process trains in is left as it is
                self.held = lock_run_folder(self.output_dir)  # raises when another process holds it
            self.write()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics[EPOCHS_TRAINED] = torch.tensor(trainer.current_epoch)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict":  # the task's last stage
            self.release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if interrupted and self.lock and trainer.is_global_zero:
            if (self.output_dir / LAST_CHECKPOINT).is_file():
                log.warning("Interrupted. To continue this run: python train.py resume=%s", self.output_dir)
            else:
                log.warning("Interrupted before its first epoch ended: nothing to resume; start it again.")
        locked_out = isinstance(exception, RunFolderLocked)  # the folder is another process's
        if trainer.is_global_zero and not locked_out:
            try:
                write_json(self.output_dir / METRICS_FILE, failure_record(exception))
            except (BrainMRIError, OSError) as err:  # a full disk: the error that stopped the run is said
                log.warning("Could not record the failure in %s: %s", METRICS_FILE, err)
        self.release()

    def release(self) -> None:
        """Release the run folder's lock if this process holds it (under ddp_spawn a worker held it, and
        released it when it ended)."""
        if self.held is not None:
            self.held.release()
            self.held = None


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


class PredictionsWriter(L.Callback):
    """``predictions.csv`` (and ``val_predictions.csv``) from ``Trainer.predict`` over the data module's
    ``predict_partitions``: made on the accelerator at the run's precision, in whichever process predicts
    (also under ddp_spawn, where predictions are not returned to the main process), written by global
    rank zero. A model that averages several models or views also returns their spread, written too.
    (Not a Lightning ``BasePredictionWriter``: rows follow the data module's file order, so it needs no
    batch indices, which the data module's own batch sampler does not give.)"""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.batches: dict[int, list] = {}

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self.batches = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches.setdefault(dataloader_idx, []).append(outputs)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            for index, partition in enumerate(trainer.datamodule.predict_partitions):
                self.write(trainer, pl_module, partition, self.batches[index])
        self.batches = {}

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
    checkpoint a run resumes from, so ``resume=<run> callbacks.early_stopping.patience=20`` waits longer,
    and that a new run from another run's checkpoint (``ckpt_path=``) waits for a better epoch of its
    own, not for one better than that run's best."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fresh_state = self.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "patience": self.patience})

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not keeps_best_checkpoints(trainer):
            self.load_state_dict(self.fresh_state)
        self.stopping_reason_message = None  # a resumed run goes on: an earlier stop no longer holds

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopping_reason_message and trainer.is_global_zero:  # why it ended before max_epochs
            log.info("Stopped early after epoch %d: %s", self.stopped_epoch, self.stopping_reason_message)


class EpochSummary(L.Callback):
    """One line per epoch (its losses, validation AUROC and seconds) in the job's log, ``train.log``, and
    on the console when that is not a terminal: in a batch job's output, where no progress bar draws."""

    progress = logging.getLogger("brain_mri.progress")
    shown = ("train/loss", "val/loss", "val/auroc")

    def __init__(self) -> None:
        self.started = time.monotonic()

    @classmethod
    def not_this_logger(cls, record: logging.LogRecord) -> bool:
        return record.name != cls.progress.name

    def consoles(self) -> list[logging.Handler]:
        """The root logger's console handlers that write to a terminal (the progress bar is there)."""
        return [
            handler
            for handler in logging.getLogger().handlers
            if type(handler) is logging.StreamHandler and getattr(handler.stream, "isatty", lambda: False)()
        ]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for handler in self.consoles():
            handler.addFilter(self.not_this_logger)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.not_this_logger)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the epoch's validation, which Lightning runs before this hook."""
        if not trainer.is_global_zero:
            return
        values = [
            f"{name} {float(trainer.callback_metrics[name]):.4f}"
            for name in self.shown
            if name in trainer.callback_metrics
        ]
        epoch = trainer.current_epoch
        self.progress.info(
            "Epoch %d (%d of %d): %s, %.1f s",
            epoch,
            epoch + 1,
            trainer.max_epochs,
            ", ".join(values),
            time.monotonic() - self.started,
        )


def task_callbacks(
    configured: list, output_dir: Path, write: Callable[[], None], first_stage: str
) -> list[L.Callback]:
    """The configured callbacks plus the ones that write the task's files (``first_stage``: ``fit`` for
    training, ``test`` for evaluation)."""
    return [*configured, RunFolderWriter(output_dir, write, first_stage), PredictionsWriter(output_dir)]


class TensorBoardImages(L.Callback):
    """Images in TensorBoard: the first training batch as it enters the model (augmented), a fixed set of
    validation images with their probabilities every ``every_n_epochs`` epochs, and after testing the
    confusion matrix, the precision-recall curve and the misclassified test images with the Grad-CAM map
    of the class they were taken for. Does nothing without a TensorBoard logger."""

    def __init__(self, count: int = 16, every_n_epochs: int = 5):
        self.count, self.every_n_epochs = count, every_n_epochs
        self.val_images: torch.Tensor | None = None
        self.tested: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def writer(trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    @staticmethod
    def caption(names: list[str], probabilities: torch.Tensor, label: int | None = None) -> str:
        """The predicted class and its probability, and the true class when known."""
        best = int(probabilities.argmax())
        truth = "" if label is None else f" (true: {names[label]})"
        return f"{names[best]} {probabilities[best]:.2f}{truth}"

    @staticmethod
    def probabilities(trainer, pl_module, images: torch.Tensor) -> torch.Tensor:
        """As the test step computes them: at the run's precision."""
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            return pl_module(images).float().softmax(dim=1).cpu()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        writer = self.writer(trainer)
        if writer is not None and trainer.global_step == 0 and trainer.is_global_zero:
            writer.add_images("train/first_batch", batch[0][: self.count].float().cpu(), 0)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self.val_images is None:
            self.val_images, self.val_labels = batch[0][: self.count].clone(), batch[1][: self.count].clone()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        writer = self.writer(trainer)
        epoch = trainer.current_epoch
        if writer is None or trainer.sanity_checking or self.val_images is None or not trainer.is_global_zero:
            return
        if epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs - 1:
            names = list(pl_module.hparams.class_names)
            probabilities = self.probabilities(trainer, pl_module, self.val_images)
            captions = [
                self.caption(names, p, int(y)) for p, y in zip(probabilities, self.val_labels, strict=True)
            ]
            grid = figures.image_grid(self.val_images[:, 0].float().cpu().numpy(), captions)
            writer.add_figure("val/examples", grid, epoch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.writer(trainer) is not None:
            images, labels = batch
            probabilities = self.probabilities(trainer, pl_module, images)
            self.tested.append((images[:, 0].float().cpu(), labels.cpu(), probabilities))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        writer = self.writer(trainer)
        if writer is None or not self.tested or not trainer.is_global_zero:
            return
        images = torch.cat([t[0] for t in self.tested])
        labels = torch.cat([t[1] for t in self.tested])
        probabilities = torch.cat([t[2] for t in self.tested])
        self.tested = []
        names = list(pl_module.hparams.class_names)
        predicted = probabilities.argmax(dim=1)
        step = trainer.current_epoch
        title = f"test ({len(labels)} images)"
        writer.add_figure(
            "test/confusion_matrix",
            figures.confusion_figure(labels.numpy(), predicted.numpy(), names, title),
            step,
        )
        for k, name in enumerate(names):  # one-vs-rest; with two classes, one curve per class
            writer.add_pr_curve(f"test/pr_curve/{name}", labels == k, probabilities[:, k], step)
        wrong = (predicted != labels).nonzero().flatten()[: self.count]
        if len(wrong):
            captions = [self.caption(names, probabilities[i], int(labels[i])) for i in wrong]
            maps = None
            if pl_module.hparams.get("cam_layer"):  # Grad-CAM of the class the model wrongly chose
                inputs = images[wrong].unsqueeze(1).expand(-1, 3, -1, -1).to(pl_module.device)
                with trainer.precision_plugin.forward_context():
                    maps = explanation(pl_module, inputs, predicted[wrong].to(pl_module.device)).cpu().numpy()
            figure = figures.image_grid(images[wrong].numpy(), captions, heat_maps=maps)
            writer.add_figure("test/misclassified", figure, step)
