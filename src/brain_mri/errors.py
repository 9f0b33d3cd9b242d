"""The one exception type the entry points turn into a plain message instead of a traceback."""


class BrainMRIError(Exception):
    """A problem with the user's input or environment (data, config, checkpoint), explained in words."""
