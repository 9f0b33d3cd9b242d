"""What a Trainer is built with and what a training run writes after it tests: callbacks, loggers,
scoring (metrics.json, predictions.csv) and the Grad-CAM gallery of the test images."""
