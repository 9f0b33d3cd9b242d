"""The tasks behind the entry points (train.py, eval.py, predict.py, export.py): each builds, runs and
writes; none imports another."""
