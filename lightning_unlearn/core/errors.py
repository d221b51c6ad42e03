"""The project's errors: each names the bad value and what would be valid.

Every error raised for bad input derives from :class:`UnlearnError`. The command line prints such
an error's message alone on stderr and exits with status 2 (``--debug`` or
``LIGHTNING_UNLEARN_DEBUG=1`` show the traceback); anything else is a bug and keeps its traceback.
Each class also derives from the built-in exception it refines (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UnlearnError(Exception):
    """Base class of the errors raised for bad input or unusable files."""


class ConfigError(UnlearnError, ValueError):
    """An argument has a value that cannot work (the message quotes it and the valid range)."""


class UnknownNameError(ConfigError):
    """A name (model, pretrained tag, dataset, class, method, config) is not known; close matches follow."""


class MissingFileError(UnlearnError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class CheckpointError(UnlearnError, ValueError):
    """A checkpoint exists but cannot be read, or does not fit the model."""


class OutputError(UnlearnError, ValueError):
    """An output folder cannot be created or written."""


class UnsupportedModelError(ConfigError):
    """The model lacks a part a method needs (e.g. a linear text projection); the message names it."""


class IllConditionedError(ConfigError):
    """A closed-form edit's linear system is singular, ill-conditioned or not finite (the message says which)."""


class DataFileError(UnlearnError, ValueError):
    """A data file exists but its content is malformed (a split list, a label file); the message
    names the file and what is wrong."""


class MissingEntryError(UnlearnError, KeyError):
    """A mapping the user gave has no entry for a name the run needs (e.g. a group of ``k``)."""


class RunError(UnlearnError, RuntimeError):
    """A run cannot go on as configured (e.g. a monitored metric was never logged, or another
    rank failed on bad input)."""
