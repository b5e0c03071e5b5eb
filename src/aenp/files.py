"""Writing files so that a reader never sees half of one, and nothing the user made is lost.

JSON records are strict: a missing number is ``null``, never a bare ``NaN``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aenp.errors import InputError, MissingFileError

PARTIAL_MARK = ".partial"
"""Part of every temporary name: ``.<name>.<random>.partial<suffix>`` beside the target."""


def check_destination(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path``, if a file may be written there (see :func:`atomic_write`).

    Raises:
        InputError: If ``path`` is an existing folder.
        MissingFileError: If the folder that should hold ``path`` does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{path} is an existing folder; aenp does not delete folders: remove it or "
            "choose another path"
        )
    if not path.parent.is_dir():
        raise MissingFileError(f"folder {path.parent} (of {path}) does not exist")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that is moved onto ``path`` when the block succeeds.

    The block writes a file, or a folder such as a zarr store, at the yielded path, which
    keeps ``path``'s suffix for writers that choose a format by it. On success it replaces
    ``path`` in one ``os.replace``; if the block raises (or the process dies) ``path`` is left
    as it was and the temporary is removed. Every call draws a fresh name, so what a killed
    process left behind never blocks a later write.

    Raises:
        InputError: If ``path`` is an existing folder: folders are never replaced,
            since that would delete whatever else the user keeps in them.
        MissingFileError: If the folder that should hold ``path`` does not exist.
    """
    path = check_destination(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_MARK}{path.suffix}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def json_safe(content: Any) -> Any:
    """``content`` with every NaN or infinite float (at any depth) replaced by None.

    Metrics have no value in some cases (the standard error of one task, the context
    log-likelihood of gridded tasks); Python's ``json`` would write them as ``NaN``, which
    strict JSON readers (``jq``, JavaScript, most other languages) refuse.
    """
    if isinstance(content, float):
        return content if math.isfinite(content) else None
    if isinstance(content, dict):
        return {key: json_safe(value) for key, value in content.items()}
    if isinstance(content, list | tuple):
        return [json_safe(value) for value in content]
    return content


def to_json(content: Any) -> str:
    """Indented strict JSON of ``content`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(content), indent=2, allow_nan=False)


def write_json(path: str | os.PathLike, content: Any) -> Path:
    """Writes :func:`to_json` of ``content`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_text(to_json(content))
    return Path(path)
