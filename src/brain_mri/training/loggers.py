"""Lightning's loggers, adapted: a CSV logger that continues a resumed run's ``metrics.csv``, and a
TensorBoard logger whose hyperparameter record does not send any scalar's steps backwards."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from brain_mri.runs.files import atomic_write_text


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, but a resumed run appends to the ``metrics.csv`` of the run it continues.

    Lightning's writer deletes an existing ``metrics.csv`` when it is created; this logger puts the file
    back and has the writer adopt its columns, so new rows are appended (tests/test_resume.py checks that
    a resumed run logs every epoch exactly once). Only rank zero writes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._continued = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._continued:
            return super().experiment
        metrics_file = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        kept = metrics_file.read_text() if metrics_file.is_file() else None
        with warnings.catch_warnings():  # its "will be deleted" warning is not true here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if kept:
            atomic_write_text(metrics_file, kept)
            writer.metrics_keys = next(csv.reader(kept.splitlines()), [])
        self._continued = True
        return writer


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, except that the results given with the hyperparameters are not
    logged again as scalars at step 0.

    TensorBoard reads a tag whose step goes backwards as a restart and drops its earlier points, so
    ``val/loss_best`` and every test metric showed as one point at step 0. The HPARAMS tab takes each
    result's value from the scalars already logged under its tag during training and testing; the
    hyperparameter record only has to name them.
    """

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None, step=None) -> None:
        super().log_hyperparams(params)  # hparams.yaml; with default_hp_metric=false, no scalar
        if not metrics:
            return
        flat = self._sanitize_params(_flatten_dict(_convert_params(params)))
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, metrics):
            writer.add_summary(summary)
