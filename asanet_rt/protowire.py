"""Protobuf wire format, read without protobuf: enough to walk ONNX files safely (lengths checked, no copies)."""
from __future__ import annotations

from typing import Iterator

__all__ = ["WireFormatError", "fields", "varint", "VARINT", "FIXED64", "BYTES", "FIXED32"]

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """Malformed protobuf at a byte offset (the message says where)."""


def fields(data: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of the message in ``data[pos:end]``.

    The value is an int for varints, None for fixed-size fields and (start, end) for length-delimited ones; a
    length that runs past ``end``, a truncated varint, field number 0 or a group wire type raise.
    """
    while pos < end:
        tag, pos = varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = varint(data, pos, end)
        elif wire == BYTES:
            size, pos = varint(data, pos, end)
            if size > end - pos:
                raise WireFormatError(f"a {size}-byte field at byte {pos} runs past its message (ends at {end})")
            value, pos = (pos, pos + size), pos + size
        elif wire in (FIXED64, FIXED32):
            step = 8 if wire == FIXED64 else 4
            if pos + step > end:
                raise WireFormatError(f"a fixed-size field at byte {pos} runs past its message")
            value, pos = None, pos + step
        else:
            raise WireFormatError(f"wire type {wire} at byte {pos} (groups and types 6, 7 are not ONNX)")
        yield number, wire, value


def varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    for i in range(pos, min(end, pos + 10)):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i + 1
        shift += 7
    raise WireFormatError(f"truncated or overlong varint at byte {pos}")
