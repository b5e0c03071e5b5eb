"""The package's layers (docs/architecture.md): imports point down, and ``import aenp`` is light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import aenp

PACKAGE = Path(aenp.__file__).parent

LAYERS = (
    ("version",),
    ("errors",),
    ("files",),
    ("grid",),
    ("batch",),
    ("data", "nn"),
    ("models",),
    ("testing",),
    ("run_directory",),
    ("prediction",),
    ("train", "evaluate"),
    ("reproduce",),
    ("cli",),
    ("",),
)
"""Units of aenp (the name after ``aenp.``; ``""`` is the package's public surface), bottom to
top. A module may import its own unit and the units of lower layers: not a peer, not above.
The leaf pairs of docs/architecture.md are ordered because one uses the other (files raises
the errors, a batch holds a grid); ``testing`` holds contract tests of models."""

HEAVY = ("pandas", "xarray", "gpytorch", "matplotlib")
"""Libraries that only prediction, climate data and figures need."""


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The unit of a module of aenp: ``aenp.data.gp`` → ``data``, ``aenp`` → ``""``."""
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of a module's unit."""
    for index, units in enumerate(LAYERS):
        if unit(module) in units:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its unit {unit(module)!r} to LAYERS")


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Line and name of every aenp module that ``source`` imports, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                # ``from aenp import testing`` imports a module; ``from aenp import x`` a name.
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else base))
    return [(line, name) for line, name in found if name == "aenp" or name.startswith("aenp.")]


def arrows_against_layers(
    source: str, module: str, is_package: bool = False
) -> list[tuple[int, str]]:
    """Imports of ``module`` that point to a peer unit or up."""
    return [
        (line, imported)
        for line, imported in imported_modules(source, module, is_package)
        if unit(imported) != unit(module) and layer(imported) >= layer(module)
    ]


def test_the_layer_check_flags_peer_and_upward_imports_only():
    source = (
        "import torch\n"
        "from aenp.grid import Grid\n"
        "from aenp.nn import mlp\n"
        "from aenp.data.batch import Batch\n"
        "def f():\n"
        "    from ..models import registry\n"
    )
    assert arrows_against_layers(source, "aenp.nn.setconv") == [
        (4, "aenp.data.batch"),
        (6, "aenp.models.registry"),
    ]
    assert arrows_against_layers(source, "aenp.cli") == []


def test_every_import_points_down_the_layers():
    arrows = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {LAYERS[layer(module)]}) "
        f"imports {imported} (layer {LAYERS[layer(imported)]})"
        for module, path in MODULES.items()
        for line, imported in arrows_against_layers(
            path.read_text(), module, path.name == "__init__.py"
        )
    ]
    assert not arrows, "imports against the layers:\n" + "\n".join(arrows)


def test_import_aenp_and_evaluation_metrics_leave_heavy_libraries_out():
    probe = (
        "import sys\n"
        "import aenp\n"
        f"print(sorted(m for m in {HEAVY} if m in sys.modules))\n"
        "import aenp.evaluate.metrics\n"
        f"print(sorted(m for m in {HEAVY} + ('aenp.data.experiments',) if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split("\n")[:2] == ["[]", "[]"], done.stdout


def test_old_import_paths_give_the_same_objects():
    import aenp.batch
    import aenp.data.batch
    import aenp.data.experiments
    import aenp.data.grid
    import aenp.grid
    import aenp.prediction

    assert aenp.data.batch.Batch is aenp.batch.Batch is aenp.Batch
    assert aenp.data.batch.GridBatch is aenp.batch.GridBatch is aenp.GridBatch
    assert aenp.data.batch.target_loglik is aenp.batch.target_loglik
    assert aenp.data.batch.GRID_SPACING_RTOL == aenp.grid.GRID_SPACING_RTOL
    assert aenp.data.grid.Grid is aenp.grid.Grid
    assert aenp.data.experiments.EvaluationBatch is aenp.batch.EvaluationBatch
    assert aenp.predict is aenp.prediction.predict


def test_every_public_name_is_listed_and_resolves():
    for name in aenp.__all__:
        assert name in dir(aenp), name
        getattr(aenp, name)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'prediction_engine'"):
        aenp.prediction_engine  # noqa: B018
