"""TFRecord files and tf.train.Example records, read without TensorFlow.

TFRecord framing, per record (all little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with masked_crc(c) = ((c >> 15 | c << 17) + 0xa282ead8) mod 2^32 and CRC-32C (Castagnoli). A short read
or a CRC mismatch raises :class:`CorruptRecord` (the caller counts it and stops reading that shard: after a
bad length nothing further can be framed).

tf.train.Example is decoded by a small protobuf wire-format parser (varints, length-delimited fields,
packed and unpacked repeated scalars), following example.proto / feature.proto::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      (map entry: key = 1, value = 2)
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Decoded features: name -> list[bytes] | np.ndarray float32 | np.ndarray int64.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator, Union

import numpy as np


class CorruptRecord(ValueError):
    """A TFRecord that is truncated or fails its CRC check."""


# ------------------------------------------------------------------------------------------------ CRC-32C
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`; uses the `google_crc32c` or `crc32c` package when one is installed."""
    if _fast is not None:
        return _fast(data)
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # optional accelerators; the pure-Python loop above is the reference
    import google_crc32c as _g  # type: ignore

    def _fast(data: bytes) -> int:
        return int(_g.value(bytes(data)))
except ImportError:
    try:
        import crc32c as _c  # type: ignore

        def _fast(data: bytes) -> int:
            return int(_c.crc32c(bytes(data)))
    except ImportError:
        _fast = None  # type: ignore[assignment]


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ framing
def write_tfrecord(path: Union[str, Path], records) -> None:
    """Write byte strings as one TFRecord file (used by tests and tools)."""
    with open(path, "wb") as f:
        for data in records:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc(header)) + bytes(data) + struct.pack("<I", masked_crc(data)))


def read_tfrecord(path: Union[str, Path], verify: bool = True) -> Iterator[bytes]:
    """Yield each record's bytes; CorruptRecord on a truncated file or a CRC mismatch."""
    with open(path, "rb") as f:
        n = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise CorruptRecord(f"{path}: record {n}: truncated header ({len(header)} of 12 bytes)")
            length, length_crc = struct.unpack("<QI", header)
            if verify and masked_crc(header[:8]) != length_crc:
                raise CorruptRecord(f"{path}: record {n}: length CRC mismatch")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise CorruptRecord(f"{path}: record {n}: truncated data ({len(data)} of {length} bytes)")
            if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise CorruptRecord(f"{path}: record {n}: data CRC mismatch")
            n += 1
            yield data


# ------------------------------------------------------------------------------------------------ protobuf
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptRecord("protobuf: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptRecord("protobuf: varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, value) of each field in a message; value: int or bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > end:
                raise CorruptRecord("protobuf: truncated fixed64")
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise CorruptRecord("protobuf: truncated length-delimited field")
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            if pos + 4 > end:
                raise CorruptRecord("protobuf: truncated fixed32")
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CorruptRecord(f"protobuf: unsupported wire type {wt}")
        yield num, wt, v


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _feature(buf: bytes):
    for num, _, value in _fields(buf):
        if num == 1:  # BytesList
            return [bytes(v) for n, _, v in _fields(value) if n == 1]
        if num == 2:  # FloatList: packed (wt 2) or one fixed32 per value (wt 5)
            parts = []
            for n, wt, v in _fields(value):
                if n == 1:
                    parts.append(np.frombuffer(v, "<f4") if wt in (2, 5) else np.empty(0, "<f4"))
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if num == 3:  # Int64List: packed varints (wt 2) or one varint per value (wt 0)
            out = []
            for n, wt, v in _fields(value):
                if n != 1:
                    continue
                if wt == 0:
                    out.append(_signed64(v))
                else:
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        out.append(_signed64(x))
            return np.array(out, np.int64)
    return []  # an empty Feature


def parse_example(buf: bytes) -> dict[str, Union[list, np.ndarray]]:
    """A serialized tf.train.Example -> {feature name: list[bytes] | float32 array | int64 array}."""
    out: dict = {}
    for num, _, features in _fields(buf):
        if num != 1:
            continue
        for n, _, entry in _fields(features):
            if n != 1:
                continue
            key, value = None, b""
            for en, _, ev in _fields(entry):
                if en == 1:
                    key = bytes(ev).decode("utf-8")
                elif en == 2:
                    value = ev
            if key is not None:
                out[key] = _feature(value)
    return out


# ------------------------------------------------------------------------------------------------ encoder
def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def serialize_example(features: dict) -> bytes:
    """{name: list[bytes] | float array | int array} -> serialized tf.train.Example (tests, tools)."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], (bytes, bytearray))):
            feat = _ld(1, b"".join(_ld(1, bytes(v)) for v in value))
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                feat = _ld(2, _ld(1, arr.astype("<f4").tobytes()))
            else:
                feat = _ld(3, _ld(1, b"".join(_enc_varint(int(x)) for x in arr.reshape(-1))))
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feat))
    return _ld(1, entries)
