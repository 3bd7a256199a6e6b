"""Training glue: stage-2 freezing and checkpoint loading, hooks, and a launcher that also runs
CPU processes."""
from .launch import launch  # noqa: F401
