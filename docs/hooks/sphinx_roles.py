"""Griffe extension: checked cross-references from the Sphinx roles aenp's docstrings use.

aenp's docstrings name other objects as ``:func:`name```, ``:class:`~aenp.x.Name``` and so
on. This extension resolves each name as Python would in the docstring's scope, warns (which
fails ``mkdocs build --strict``) when a name of aenp does not exist, and turns the role into a
link to the object's API entry. Names outside aenp (``torch.compile``) stay code.
"""

from __future__ import annotations

import re
from functools import partial
from importlib.util import find_spec
from typing import Any

from griffe import (
    AliasResolutionError,
    CyclicAliasError,
    Extension,
    Module,
    NameResolutionError,
    Object,
    logger,
)

ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<name>[\w.]+)`")


class SphinxRoles(Extension):
    """Replaces the Sphinx roles of every docstring of a package by checked links."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Rewrites the docstrings of ``pkg`` once all of its modules are loaded."""
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(
                    partial(_link, obj=obj, pkg=pkg), obj.docstring.value
                )


def _objects(obj: Object) -> list[Object]:
    """``obj`` and every object defined in it (imported names are left to their module)."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_objects(member))
    return found


def _link(match: re.Match, *, obj: Object, pkg: Module) -> str:
    """The link (or, outside ``pkg``, the code) that stands for one role."""
    name = match["name"]
    title = name.rsplit(".", 1)[-1] if match["tilde"] else name
    path = _resolve(name, obj, pkg)
    if path is None:
        where = f"{obj.relative_package_filepath}:{obj.docstring.lineno}"
        logger.warning("%s: %s names %r, which does not exist", where, obj.path, name)
        return f"`{title}`"
    if not _inside(path, pkg):
        return f"`{title}`"
    # Optional: an existing object without an entry of its own (an undocumented attribute)
    # is shown as code rather than failing the build; a missing one was reported above.
    return f'<autoref optional identifier="{path}"><code>{title}</code></autoref>'


def _resolve(name: str, obj: Object, pkg: Module) -> str | None:
    """The full path ``name`` stands for in the scope of ``obj``; None if it names nothing."""
    first, _, rest = name.partition(".")
    if first == pkg.name or (rest and find_spec(first) is not None):
        path = name  # absolute: aenp's own, or another package's (matplotlib.figure.Figure)
    else:
        try:
            path = obj.resolve(first)
        except NameResolutionError:
            return None
        path = f"{path}.{rest}" if rest else path
    if not _inside(path, pkg):
        return path
    try:
        target = pkg
        for part in path.split(".")[1:]:
            target = target.members[part]
    except (KeyError, AliasResolutionError, CyclicAliasError):
        return None
    return path


def _inside(path: str, pkg: Module) -> bool:
    return path == pkg.name or path.startswith(f"{pkg.name}.")
