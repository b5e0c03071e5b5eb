import pytest
import torch
from hypothesis import settings

from aenp.data.smoke import SmokeSettings, generate

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
def smoke_store(tmp_path_factory):
    """A tiny store simulated with PhiFlow: 10 training and 3 test plumes of 16 × 16 cells."""
    out = tmp_path_factory.mktemp("smoke")
    return generate(out, 10, 3, SmokeSettings(resolution=16, num_steps=4), 5, progress=False)
