"""How the gateway process allocates large buffers (glibc only; elsewhere nothing changes).

A huge statement is assembled read by read into a growing bytearray (``wire/packets.py``).
glibc serves a block that large from an anonymous mapping, which ``realloc`` grows in place
(``mremap``), until the process frees one: then glibc raises its mapping threshold to that
block's size (up to 32 MiB), later blocks of that size come from the heap, and growing one
copies it whole, 20 MiB in one step of the event loop (11 to 22 ms here) while every other
session waits. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the
adjustment off) keeps every block of ``LARGE_BLOCK`` or more mapped: growing one costs
about a millisecond per step (docs/performance.md, "Huge statements and bystanders").
Smaller blocks, such as the 256 KiB a read returns, stay on the heap as before.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger("hoopy.server")

LARGE_BLOCK = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def map_large_blocks() -> bool:
    """Have glibc map every allocation of ``LARGE_BLOCK`` or more; whether it could."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))
    except (OSError, AttributeError) as exc:
        log.debug("mallopt is not available (%s): large buffers grow as glibc decides", exc)
        return False
