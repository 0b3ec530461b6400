"""The allocator setting that keeps growing a huge statement's buffer cheap (memory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from hoopy.gateway import memory


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_large_blocks_are_mapped_on_glibc() -> None:
    # In fresh interpreters: mallopt changes the whole process. Freeing a 20 MiB block
    # raises glibc's own threshold, so the next 8 MiB block comes from the heap (where
    # growing it copies it); with the threshold fixed it is a mapping of its own.
    assert _next_block_on_heap(pinned=False), "the control: glibc's adjustment happened"
    assert not _next_block_on_heap(pinned=True)


def _next_block_on_heap(*, pinned: bool) -> bool:
    code = (
        "import ctypes\n"
        "from hoopy.gateway import memory\n"
        f"assert memory.map_large_blocks() if {pinned} else True\n"
        "first = bytearray(20 << 20)\n"
        "del first\n"
        "block = bytearray(8 << 20)\n"
        "address = ctypes.addressof((ctypes.c_char * 1).from_buffer(block))\n"
        "heaps = [line.split()[0].split('-') for line in open('/proc/self/maps')"
        " if line.rstrip().endswith('[heap]')]\n"
        "print(any(int(lo, 16) <= address < int(hi, 16) for lo, hi in heaps))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_elsewhere_it_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert memory.map_large_blocks() is False
