"""The version of aenp, in one place: the package metadata (pyproject.toml) reads it here."""

__version__ = "0.1.0"
