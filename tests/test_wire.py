"""msgpack-numpy wire format: openpi's layout, strict decoding, never pickle."""
import msgpack
import numpy as np
import pytest

from real_robot.wire import WireError, pack, unpack


def test_roundtrip_keeps_dtype_shape_and_values():
    obs = {"observation/image": np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3),
           "observation/state": np.linspace(-1, 1, 8, dtype=np.float32), "prompt": "pick", "n": np.int64(3)}
    back = unpack(pack(obs))
    assert back["prompt"] == "pick" and back["n"] == 3 and back["n"].dtype == np.int64
    for key in ("observation/image", "observation/state"):
        assert back[key].dtype == obs[key].dtype and np.array_equal(back[key], obs[key])


def test_reads_what_openpi_clients_write():
    """openpi_client.msgpack_numpy packs arrays as a map with bytes keys; written out here by hand."""
    a = np.ones((2, 3), dtype=np.float64)
    raw = msgpack.packb({"actions": {b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": (2, 3)}},
                        use_bin_type=True)
    assert np.array_equal(unpack(raw)["actions"], a)


@pytest.mark.parametrize("bad, message", [
    (b"\xc1\x00\x01", "not a msgpack"),
    (pack({"x": np.zeros(4, np.float32)})[:-3], "not a msgpack"),
    (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"abc", b"dtype": "|O", b"shape": [1]}}), "not allowed"),
    (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"abc", b"dtype": "<f4", b"shape": [2]}}), "needs 8"),
    (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}}), "bad array shape"),
    (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [1 << 40]}}), "exceeds"),
])
def test_malformed_messages_raise_wire_error(bad, message):
    with pytest.raises(WireError, match=message):
        unpack(bad)


def test_object_arrays_are_never_sent():
    with pytest.raises(WireError, match="dtype"):
        pack({"x": np.array([object()])})
