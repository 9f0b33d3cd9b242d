"""A CSV logger that continues a run's ``metrics.csv`` when the run is resumed, instead of deleting it."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


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
            metrics_file.write_text(kept)
            writer.metrics_keys = next(csv.reader(kept.splitlines()), [])
        self._continued = True
        return writer
