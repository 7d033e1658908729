"""A small, bounded reader of the protobuf wire format (enough for ``.caffemodel`` files).

No schema and no code generation: callers walk a message's fields by number. Every length is
checked against the bytes that are actually there before anything is sliced, so a corrupt or
hostile file gives a ``ValueError`` and never a large allocation; packed float arrays are
returned as zero-copy views of the input.

Example:
    >>> from verydeep.io.weights.protowire import fields
    >>> msg = bytes([0x0A, 0x02, 0x68, 0x69, 0x10, 0x96, 0x01])  # field 1 = "hi", field 2 = 150
    >>> [(f.number, f.value) for f in fields(memoryview(msg))]
    [(1, b'hi'), (2, 150)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    raw: memoryview | int  # the payload (LEN, FIXED32, FIXED64) or the integer (VARINT)

    @property
    def value(self) -> bytes | int:
        return self.raw if isinstance(self.raw, int) else bytes(self.raw)


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (value, next position). At most 10 bytes."""
    result = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    raise ValueError("malformed protobuf varint (longer than 10 bytes)")


def fields(buf: memoryview) -> Iterator[Field]:
    """The fields of one message, in file order; raises ValueError on malformed input."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("malformed protobuf: field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield Field(number, wire, value)
            continue
        if wire == LEN:
            size, pos = read_varint(buf, pos)
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
        else:  # 3/4 are deprecated groups, which caffe.proto never uses; 6/7 do not exist
            raise ValueError(f"malformed protobuf: unsupported wire type {wire} (field {number})")
        if size > end - pos:  # the declared size is checked before slicing, never trusted
            raise ValueError(f"truncated protobuf: field {number} declares {size} bytes, {end - pos} left")
        yield Field(number, wire, buf[pos : pos + size])
        pos += size


def as_message(f: Field) -> memoryview:
    if f.wire != LEN:
        raise ValueError(f"malformed protobuf: field {f.number} should be a message")
    return f.raw  # type: ignore[return-value]


def as_string(f: Field) -> str:
    try:
        return bytes(as_message(f)).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"malformed protobuf: field {f.number} is not UTF-8 text") from None


def as_int(f: Field) -> int:
    """A varint field read as a signed 64-bit integer (negative int32/int64 use 10 bytes)."""
    if f.wire != VARINT:
        raise ValueError(f"malformed protobuf: field {f.number} should be an integer")
    v = f.raw
    return v - (1 << 64) if v >= 1 << 63 else v  # type: ignore[operator]


def packed_ints(f: Field) -> list[int]:
    """A repeated integer field, packed (one LEN payload) or not (one varint)."""
    if f.wire == VARINT:
        return [as_int(f)]
    buf, pos, out = as_message(f), 0, []
    while pos < len(buf):
        v, pos = read_varint(buf, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def packed_floats(f: Field, dtype: str = "<f4") -> np.ndarray:
    """A repeated float/double field: a little-endian view of the payload (no copy)."""
    width = np.dtype(dtype).itemsize
    buf = f.raw if f.wire == LEN else None
    if f.wire == (FIXED32 if width == 4 else FIXED64):
        buf = f.raw  # one unpacked element
    if buf is None or len(buf) % width:  # type: ignore[arg-type]
        raise ValueError(f"malformed protobuf: field {f.number} is not a packed array of {dtype}")
    return np.frombuffer(buf, dtype=dtype)  # type: ignore[arg-type]
