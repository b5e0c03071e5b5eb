"""Shared fixtures, and the shape checks every test run makes.

Every call the tests make into a module of aenp that annotates tensor shapes (one that uses
jaxtyping) checks those shapes and the function's other annotations: jaxtyping's import hook
decorates each function and dataclass of such a module with beartype as it is imported, so the
hook is installed here, before aenp is first imported. Subprocesses the tests start (``aenp
train``) run unchecked.
"""

import importlib.util
import inspect
import os
import sys
import typing
from pathlib import Path

import beartype  # noqa: F401 (imported before the hook, see below)
import jaxtyping
import pytest
import torch
import torch._dynamo
from hypothesis import settings

TYPECHECKER = "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
"""beartype, letting an int pass where a float is annotated, as static type checkers do."""

UNCHECKED_MODULES = {
    # Its warnings name the caller of aenp.predict by counting stack frames, which the checks'
    # wrappers would add to.
    "aenp.prediction.gridded",
}


def _modules_with_shapes() -> list[str]:
    """The aenp modules that use jaxtyping, less :data:`UNCHECKED_MODULES`."""
    root = Path(importlib.util.find_spec("aenp").origin).parent
    names = (
        ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for path in sorted(root.rglob("*.py"))
        if "jaxtyping" in path.read_text(encoding="utf-8")
    )
    return [name for name in names if name not in UNCHECKED_MODULES]


# Modules first imported while the hook loads a module of aenp are compiled afresh on every run
# where Python writes no bytecode (PYTHONDONTWRITEBYTECODE); torch._dynamo (which nn.setconv's
# torch.compiler.disable loads) and beartype are imported above so that they are not (3 s).
if "aenp" in sys.modules:
    raise RuntimeError("aenp was imported before tests/conftest.py could check its shapes")
jaxtyping.install_import_hook(_modules_with_shapes(), TYPECHECKER)

from aenp.batch import Batch, GridBatch  # noqa: E402
from aenp.data.gp import GibbsSwitchKernel  # noqa: E402
from aenp.data.smoke import SmokeSettings, generate  # noqa: E402
from aenp.models.neural_process import NeuralProcess  # noqa: E402
from aenp.nn.setconv import lattice_extent, lattice_grid  # noqa: E402

# These validate their arguments themselves and name what is wrong, which the tests check; the
# checks would pre-empt those errors, so they are skipped here (jaxtyping reads the mark at each
# call) and start one call further in.
for validated in (
    Batch.__init__,
    Batch.pad_context,
    GridBatch.__init__,
    NeuralProcess.forward,
    NeuralProcess.forward_batch,
    GibbsSwitchKernel.forward,
    lattice_grid,
    lattice_extent,
):
    typing.no_type_check(inspect.unwrap(validated))


# Under pytest-xdist (``make test`` runs ``-n auto``) the workers share the cores: one worker
# per core, each on its share of threads, instead of every worker's torch using them all.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture
def unchecked_shapes(monkeypatch):
    """Turns the shape checks off, for a test that compiles: torch.compile cannot trace them."""
    monkeypatch.setattr(jaxtyping.config, "jaxtyping_disable", True)


@pytest.fixture
def quick_compile(monkeypatch, unchecked_shapes):
    """Compiles with AOTAutograd's eager backend: the same graphs as inductor, built fast."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda f, **kw: real(f, **kw, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# Property tests: repeatable examples by default, a wider random search on request
# (``pytest --hypothesis-profile=explore``).
settings.register_profile("default", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
    # The command line and training flush subnormal floats process-wide; undo it.
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def climate_field(tmp_path_factory):
    """A zarr store of 40 annual steps of 30 × 40 half-degree cells over 30-45°N, 120-100°W
    (the region of ``tests.train.test_ddp_climate.overrides``)."""
    from aenp.data.climate import write_synthetic_field

    path = tmp_path_factory.mktemp("field") / "t2m.zarr"
    box = {"south": 30, "north": 45, "west": -120, "east": -100}
    return write_synthetic_field(
        path, 40, 30, 40, start="1980-07-01", freq="365D", chunks=(8, 16, 16), progress=False, **box
    )


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """A tiny store simulated with PhiFlow: 10 training and 3 test plumes of 16 × 16 cells."""
    out = tmp_path_factory.mktemp("smoke")
    return generate(out, 10, 3, SmokeSettings(resolution=16, num_steps=4), 5, progress=False)
