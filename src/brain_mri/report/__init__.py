"""The report of a sweep or run folder, from the files the runs wrote: tables, figures, statistics
(bootstrap intervals, out-of-fold metrics) and the HTML page. ``python -m brain_mri.report <folder>``."""
