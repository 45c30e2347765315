"""msgpack with numpy arrays, the wire format of openpi's policy server (no pickle).

An array travels as {"__ndarray__": True, "data": raw bytes, "dtype": dtype.str, "shape": [...]}
and a numpy scalar as {"__npgeneric__": True, "data": value, "dtype": dtype.str}, which is what
`openpi_client.msgpack_numpy` writes, so openpi clients and this server understand each other.
Decoding is strict: only plain numeric/bool dtypes, the byte count must match dtype x shape, and
anything else raises `WireError` naming the problem.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: never object, void or strings
MAX_ELEMENTS = 64 * 1024 * 1024


class WireError(ValueError):
    """A message that is not valid msgpack-numpy."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"cannot send arrays of dtype {obj.dtype}; allowed kinds: bool, int, uint, float")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _field(obj: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in obj:
            return obj[key]
    raise WireError(f"array message without '{name}'")


def _decode(obj: dict) -> Any:
    if obj.get(b"__ndarray__") or obj.get("__ndarray__"):
        try:
            dtype = np.dtype(_field(obj, "dtype"))
        except TypeError as err:
            raise WireError(f"unknown dtype {_field(obj, 'dtype')!r}") from err
        if dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"dtype {dtype} is not allowed; allowed kinds: bool, int, uint, float")
        shape = _field(obj, "shape")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise WireError(f"bad array shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > MAX_ELEMENTS:
            raise WireError(f"array of {count} elements exceeds the limit of {MAX_ELEMENTS}")
        data = _field(obj, "data")
        if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
            size = len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__
            raise WireError(f"array data is {size} bytes, dtype {dtype} x shape {list(shape)} needs {count * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if obj.get(b"__npgeneric__") or obj.get("__npgeneric__"):
        dtype = np.dtype(_field(obj, "dtype"))
        if dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"dtype {dtype} is not allowed")
        return dtype.type(_field(obj, "data"))
    return obj


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as err:  # msgpack's own errors: truncated, extra data, bad types
        raise WireError(f"not a msgpack message: {type(err).__name__}: {err}") from err
