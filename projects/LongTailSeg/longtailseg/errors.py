"""Errors that LongTailSeg raises for bad input: each message is one line naming the file or
config key at fault and the fix, so tools can print it without a traceback."""

import re


class LongTailSegError(Exception):
    """Base class; ``tools/*`` print ``error: <message>`` and exit with status 2."""


class DatasetError(LongTailSegError, ValueError):
    """A dataset folder or file is missing or holds values the dataset's metadata rules out."""


class ClassStatsError(LongTailSegError, ValueError):
    """A class-statistics file is missing, malformed, or does not match the dataset."""


class ConfigError(LongTailSegError, ValueError):
    """A config key has a value the code cannot use."""


class UnreadableFileError(LongTailSegError, ValueError):
    """A results, statistics or data file cannot be read as what it should hold (truncated JSON,
    not a text file, ...)."""


class UntrustedFileError(LongTailSegError):
    """A weights, config or results file holds something that would run code when read (a pickle
    global or a YAML tag outside ``longtailseg.safe_files``' allow-list); it is refused, not read.
    Not a ValueError, so that ``except ValueError`` around config loading cannot reword it."""


def one_line(error):
    """The last line of an error's message: exceptions re-raised by DataLoader workers carry the
    worker's traceback in front of our message."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return _ERROR_PREFIX.sub("", last)


# "longtailseg.errors.DatasetError: " as a re-raised traceback's last line spells it.
_ERROR_PREFIX = re.compile(r"^([\w.]*\.)?(DatasetError|ClassStatsError|ConfigError|UnreadableFileError|"
                           r"UntrustedFileError|LongTailSegError): ")
