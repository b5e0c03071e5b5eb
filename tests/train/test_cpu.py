"""Subnormal floats are flushed to zero by training and by every ``aenp`` command."""

import pytest
import torch

from aenp import cli
from aenp.train.cpu import flush_subnormal_floats

SUBNORMAL = 1e-39
"""Below float32's smallest normal number (about 1.2e-38)."""

pytestmark = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormal floats"
)


def subnormals_survive() -> bool:
    return (torch.tensor([SUBNORMAL]) * 1.0).item() != 0.0


def test_flushing_makes_subnormal_floats_zero():
    assert subnormals_survive()
    flush_subnormal_floats()
    assert not subnormals_survive()


def test_every_aenp_command_flushes_them(capsys):
    assert subnormals_survive()
    assert cli.main(["models"]) == 0
    assert "convcnp" in capsys.readouterr().out
    assert not subnormals_survive()
