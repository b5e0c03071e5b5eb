"""The CPU settings of training and of every ``aenp`` command: subnormal floats flushed to zero,
freed memory kept for reuse."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from aenp import cli
from aenp.train import cpu
from aenp.train.cpu import flush_subnormal_floats

SUBNORMAL = 1e-39
"""Below float32's smallest normal number (about 1.2e-38)."""

flushing = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormal floats"
)


def subnormals_survive() -> bool:
    return (torch.tensor([SUBNORMAL]) * 1.0).item() != 0.0


@flushing
def test_flushing_makes_subnormal_floats_zero():
    assert subnormals_survive()
    flush_subnormal_floats()
    assert not subnormals_survive()


@flushing
def test_every_aenp_command_flushes_them(capsys):
    assert subnormals_survive()
    assert cli.main(["models"]) == 0
    assert "convcnp" in capsys.readouterr().out
    assert not subnormals_survive()


HEAP_USE = """
import ctypes, sys
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
exec(sys.argv[1])
before = mallinfo2()
blocks = [torch.ones(2**18) for _ in range(64)]  # 64 tensors of 1 MiB
during = mallinfo2()
del blocks
after = mallinfo2()
grew = during.arena - before.arena >= 32 * 2**20
print(during.hblks - before.hblks, grew, after.arena == during.arena)
"""
"""Prints, for 64 tensors of 1 MiB: how many were mapped apart from the heap, whether the heap
grew for them, and whether it kept that memory once they were freed."""


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a setting of glibc's malloc")


def heap_use(setup: str, environment: dict[str, str] | None = None) -> tuple[int, bool, bool]:
    done = subprocess.run(
        [sys.executable, "-c", HEAP_USE, setup],
        env=None if environment is None else os.environ | environment,
        capture_output=True,
        text=True,
        check=True,
    )
    mapped, grew, kept = done.stdout.splitlines()[-1].split()  # after what the setup printed
    return int(mapped), grew == "True", kept == "True"


@glibc
@pytest.mark.parametrize(
    "setup",
    [
        "from aenp.train.cpu import keep_freed_memory; assert keep_freed_memory()",
        "from aenp import cli; cli.main(['models'])",
    ],
    ids=["keep_freed_memory", "every aenp command"],
)
def test_freed_tensor_memory_stays_in_the_heap(setup):
    # With glibc's defaults, in a fresh process, each tensor is mapped and unmapped on its own.
    assert heap_use("")[0] == 64
    assert heap_use(setup) == (0, True, True)


@glibc
def test_the_malloc_environment_gives_a_process_the_same_setting():
    assert heap_use("", cpu.MALLOC_ENVIRONMENT) == (0, True, True)


class NoMallopt:
    """A C library without glibc's ``mallopt`` (macOS, Windows)."""

    def __init__(self, name):
        pass


def test_keeping_freed_memory_is_skipped_where_the_c_library_lacks_it(monkeypatch):
    monkeypatch.setattr(cpu.ctypes, "CDLL", NoMallopt)
    assert cpu.keep_freed_memory() is False
