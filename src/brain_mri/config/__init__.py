"""Settings: the schemas derived from the constructors, the checks each task runs once at start, and
what the Hydra entry points share (resolvers, the task runner, the output-folder callback)."""
