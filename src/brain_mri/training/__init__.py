"""The Lightning pieces a Trainer is built with: callbacks, loggers, and testing with its results."""
