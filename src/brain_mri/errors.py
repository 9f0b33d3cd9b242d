"""The one exception type the entry points turn into a plain message instead of a traceback."""


class BrainMRIError(Exception):
    """A problem with the user's input or environment (data, config, checkpoint), explained in words."""


def user_error(err: BaseException | None) -> BrainMRIError | None:
    """The user-facing error behind ``err``: itself, or the one Hydra wrapped while instantiating a
    config node (``InstantiationException``); None when there is none."""
    while err is not None and not isinstance(err, BrainMRIError):
        err = err.__cause__
    return err
