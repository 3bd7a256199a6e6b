"""Training glue: the Trainer's building blocks and a launcher that also runs CPU processes."""
from .launch import launch  # noqa: F401
