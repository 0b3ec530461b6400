"""The masking hot loop: rewrite the masked cells of whole row packets in a chunk of a result
set's bytes, framing the rewritten rows into an output buffer. Kept alone in this module so it
can be compiled with mypyc (``scripts/build_accelerators.py``), like ``_rowscan``; without the
compiled build the same code runs as plain Python, and a hypothesis test checks that the two
agree and that both agree with the general path (``MaskingPlan.text_row``/``binary_row``).

The loop handles the common packet only: complete, shorter than 16 MiB before and after the
rewrite, well formed. It stops before anything else and says why, and the caller's general
path (one packet at a time, with its errors and 16 MiB continuation packets) takes that packet:

- ``MORE``: the rest of the chunk is not a complete packet;
- ``END``: the next packet may end the rows (ERR, or an EOF/OK terminator);
- ``SLOW``: the next packet is empty or 16 MiB long, malformed, would grow to 16 MiB, or one of
  its values made a mask function raise (the general path raises the same error with its
  message, and ends the result with an ERR).

A row that stops the loop leaves nothing in ``out`` and nothing in ``counts``.

How a masked column is rewritten (``kinds``, with ``args`` for each):

- ``VALUE``: ``args[k](value) -> bytes | None`` (None: NULL), the value without its length;
- ``CELL``: ``args[k](cell) -> bytes | None``, a whole binary-protocol cell (numbers, dates);
- ``CONSTANT``: the value becomes ``args[k]`` (bytes);
- ``NULL``: the value becomes NULL;
- ``HMAC``: ``args[k]`` is ``(inner, outer, prefix, size)``: SHA-256 states after the key's
  HMAC pads; the value becomes ``prefix`` and the hex of the first ``size`` bytes of its HMAC.

The last three are done here rather than through a call (a Python call per value costs
about what the rest of the row does).
"""

from binascii import hexlify
from collections.abc import Callable
from typing import Any, Final, cast

MAX_PACKET_PAYLOAD: Final = 0xFFFFFF
MORE: Final = 0
END: Final = 1
SLOW: Final = 2

VALUE: Final = 0
CELL: Final = 1
CONSTANT: Final = 2
NULL: Final = 3
HMAC: Final = 4

_TEXT_NULL: Final = 0xFB
_BITMAP_OFFSET: Final = 2


def _put_lenenc(out: bytearray, n: int) -> None:
    if n < 0xFB:
        out.append(n)
    elif n < 0x10000:
        out.append(0xFC)
        out.append(n & 0xFF)
        out.append(n >> 8)
    elif n < 0x1000000:
        out.append(0xFD)
        out.append(n & 0xFF)
        out.append((n >> 8) & 0xFF)
        out.append(n >> 16)
    else:
        out.append(0xFE)
        out += n.to_bytes(8, "little")


def _lenenc_at(data: bytes, p: int, stop: int) -> tuple[int, int]:
    """(value start, value end) of the length-encoded string at ``p``; (-1, -1) when it is
    malformed or runs past ``stop``; (-2, -2) for the text protocol's NULL byte."""
    b = data[p]
    if b < 0xFB:
        start = p + 1
        end = start + b
    elif b == _TEXT_NULL:
        return -2, -2
    elif b == 0xFC:
        start = p + 3
        if start > stop:
            return -1, -1
        end = start + (data[p + 1] | (data[p + 2] << 8))
    elif b == 0xFD:
        start = p + 4
        if start > stop:
            return -1, -1
        end = start + (data[p + 1] | (data[p + 2] << 8) | (data[p + 3] << 16))
    elif b == 0xFE:
        start = p + 9
        if start > stop:
            return -1, -1
        end = start + int.from_bytes(data[p + 1 : start], "little")
    else:
        return -1, -1
    if end > stop:
        return -1, -1
    return start, end


def _masked(kind: int, arg: object, value: bytes) -> bytes | None:
    """A value masked by a call (``VALUE``, ``CELL``) or by its keyed hash (``HMAC``)."""
    if kind == HMAC:
        pads = cast(tuple[Any, Any, bytes, int], arg)
        inner = pads[0].copy()
        inner.update(value)
        outer = pads[1].copy()
        outer.update(inner.digest())
        digest = cast(bytes, outer.digest())
        return pads[2] + hexlify(digest[: pads[3]])
    fn = cast(Callable[[bytes], bytes | None], arg)
    return fn(value)


def mask_rows(
    data: bytes,
    pos: int,
    end: int,
    terminator_limit: int,
    binary: bool,
    slots: list[int],
    widths: list[int],
    kinds: list[int],
    args: list[object],
    counts: list[int],
    shift: int,
    out: bytearray,
) -> tuple[int, int, int, int]:
    """Rewrite whole row packets of ``data[pos:end]`` into ``out``.

    Per column of the result set: ``slots[i]`` is the index of how it is masked in ``kinds``
    and ``args`` (-1: not masked); for binary rows ``widths[i]`` is its fixed width (0:
    length-encoded, -1: a NULL-typed column). ``counts[k]`` counts the values rewritten by
    ``k`` (NULLs are left alone and not counted). A mask function that raises stops the loop
    before its row (``SLOW``). Sequence ids go out ``shift`` higher than they came.

    Returns ``(pos, rows, next_seq, why)``: where it stopped, the rows rewritten, the sequence
    id after the last of them (-1: none) and why it stopped (``MORE``, ``END``, ``SLOW``).
    """
    rows = 0
    next_seq = -1
    ncols = len(slots)
    masks = len(kinds)
    hits: list[int] = []
    bitmap_size = (ncols + 7 + _BITMAP_OFFSET) // 8
    while True:
        body = pos + 4
        if body > end:
            return pos, rows, next_seq, MORE
        length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        stop = body + length
        if stop > end:
            return pos, rows, next_seq, MORE
        if length == 0 or length >= MAX_PACKET_PAYLOAD:
            return pos, rows, next_seq, SLOW
        first = data[body]
        if first >= 0xFE and (first == 0xFF or length < terminator_limit):
            return pos, rows, next_seq, END
        mark = len(out)
        seq = data[pos + 3]
        if masks == 0:
            out += data[pos:stop]
            if shift:
                out[mark + 3] = (seq + shift) & 0xFF
            rows += 1
            next_seq = (seq + 1) & 0xFF
            pos = stop
            continue
        out += b"\x00\x00\x00\x00"  # the header, written once the row's length is known
        hits.clear()
        failed = False
        if binary:
            p = body + 1 + bitmap_size
            if first != 0 or p > stop:
                failed = True
            else:
                out += data[body:p]
            copied = p
            bitmap = body + 1
            col = 0
            while not failed and col < ncols:
                bit = col + _BITMAP_OFFSET
                if data[bitmap + (bit >> 3)] & (1 << (bit & 7)):
                    col += 1
                    continue
                width = widths[col]
                if width < 0 or p >= stop:
                    failed = True
                    break
                if width > 0:
                    vstart = p
                    vend = p + width
                    if vend > stop:
                        failed = True
                        break
                else:
                    vstart, vend = _lenenc_at(data, p, stop)
                    if vstart < 0:
                        failed = True
                        break
                k = slots[col]
                if k >= 0:
                    kind = kinds[k]
                    if kind == CONSTANT:
                        new = cast(bytes, args[k])
                    elif kind == NULL:
                        new = None
                    else:
                        try:
                            new = _masked(kind, args[k], data[p:vend] if kind == CELL
                                          else data[vstart:vend])  # fmt: skip
                        except Exception:
                            failed = True
                            break
                    out += data[copied:p]
                    if new is None:
                        flag = mark + 4 + 1 + (bit >> 3)
                        out[flag] = out[flag] | (1 << (bit & 7))
                    else:
                        if kind != CELL:
                            _put_lenenc(out, len(new))
                        out += new
                    copied = vend
                    hits.append(k)
                p = vend
                col += 1
        else:
            p = body
            copied = p
            col = 0
            while col < ncols:
                if p >= stop:
                    failed = True
                    break
                vstart, vend = _lenenc_at(data, p, stop)
                if vstart == -2:
                    p += 1
                    col += 1
                    continue
                if vstart < 0:
                    failed = True
                    break
                k = slots[col]
                if k >= 0:
                    kind = kinds[k]
                    if kind == CONSTANT:
                        new = cast(bytes, args[k])
                    elif kind == NULL:
                        new = None
                    else:
                        try:
                            new = _masked(kind, args[k], data[vstart:vend])
                        except Exception:
                            failed = True
                            break
                    out += data[copied:p]
                    if new is None:
                        out.append(_TEXT_NULL)
                    else:
                        _put_lenenc(out, len(new))
                        out += new
                    copied = vend
                    hits.append(k)
                p = vend
                col += 1
        if failed or p != stop:
            del out[mark:]
            return pos, rows, next_seq, SLOW
        out += data[copied:stop]
        size = len(out) - mark - 4
        if size >= MAX_PACKET_PAYLOAD:
            del out[mark:]
            return pos, rows, next_seq, SLOW
        out[mark] = size & 0xFF
        out[mark + 1] = (size >> 8) & 0xFF
        out[mark + 2] = size >> 16
        out[mark + 3] = (seq + shift) & 0xFF
        for k in hits:
            counts[k] += 1
        rows += 1
        next_seq = (seq + 1) & 0xFF
        pos = stop
