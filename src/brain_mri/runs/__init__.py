"""A run folder and what is written into it: file names and rows, checkpoints, resume and the run lock,
and the Grad-CAM gallery of its test images."""
