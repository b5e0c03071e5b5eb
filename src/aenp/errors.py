"""The errors aenp raises on purpose.

Each message names the argument or file, what was expected and what was given. Every class
derives from :class:`AenpError` and from the built-in exception a caller would expect
(``ValueError``, ``TypeError``, ``FileNotFoundError``), so both ``except AenpError`` and
``except ValueError`` work.
"""

from __future__ import annotations


class AenpError(Exception):
    """Base of every error aenp raises on purpose."""


class InputError(AenpError, ValueError):
    """An argument, tensor, setting or file content is invalid (shape, range, value)."""


class InputTypeError(AenpError, TypeError):
    """An argument has the wrong type or dtype."""


class MissingFileError(AenpError, FileNotFoundError):
    """A file or folder that should exist does not."""


class RunError(AenpError, RuntimeError):
    """A training run that aenp started in a process of its own failed."""
