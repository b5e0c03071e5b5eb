"""The process-wide CPU settings that training and the ``aenp`` command share."""

import ctypes

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (``malloc.h``)."""

HEAP_UP_TO = 32 * 2**20
"""Largest allocation served from the heap: glibc's ceiling for its mmap threshold."""

KEEP_FREE_UP_TO = 2**30
"""Freed heap memory kept for reuse before any is returned to the system."""

MALLOC_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(HEAP_UP_TO),
    "MALLOC_TRIM_THRESHOLD_": str(KEEP_FREE_UP_TO),
}
"""The environment that gives a process :func:`keep_freed_memory`'s setting from its start
(glibc reads it then): how benchmarks give another library's code the same allocator."""


def configure_cpu() -> None:
    """Applies every setting of this module, for the rest of the process."""
    flush_subnormal_floats()
    keep_freed_memory()


def flush_subnormal_floats() -> None:
    """Makes the CPU treat subnormal floats as zero, for the rest of the process.

    Sharp attention and small Adam statistics produce subnormal floats, which are ~50x slower
    on x86 CPUs; flushing them to zero changes nothing measurable.
    """
    torch.set_flush_denormal(True)


def keep_freed_memory() -> bool:
    """Makes glibc's ``malloc`` keep freed memory for the next step, for the rest of the process.

    A training step allocates and frees the same large tensors every step. By default glibc
    maps allocations above a threshold afresh and returns free memory at the top of its heap to
    the system, and the threshold adapts to what the process freed before, so whether each step
    faults its tensors' pages in again (the kernel zeroing every page) depends on the process's
    history: a quick gp1d TE-TNP in ``aenp train`` faulted 3,400 pages per step. Here
    allocations up to ``HEAP_UP_TO`` come from the heap and up to ``KEEP_FREE_UP_TO`` of freed
    memory is kept, so the pages are reused whatever came before; the peak memory measured the
    same (README, "Fast training").

    Returns:
        Whether the C library took the setting (``False`` where it is not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no mallopt; no C library to open
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREE_UP_TO)
    )
