"""Torch tensors in pickles (DECA's landmark file), read and written without torch.

The format itself is checked against real torch whenever torch is importable: torch reads
what we write, and we read what torch writes (including views with offsets and strides).
"""

from __future__ import annotations

import importlib.util
import io
import pickletools
import sys

import numpy as np
import pytest

from flamejax.io import FlameFileError, read_npy_object
from flamejax.io.npy import write_npy_object
from flamejax.io.pickle_writer import NamedGlobalPickler
from flamejax.io.torch_pickle import (
    TensorForPickle,
    legacy_storage_bytes,
    load_legacy_storage,
    rebuild_tensor_v2,
)
from io_fixtures import Call

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")


def _tables(seed=0):
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, 1000, size=(79, 17)),
            "bary": rng.random((79, 17, 3)).astype(np.float32),
            "half": rng.random(4).astype(np.float16),
            "flags": rng.random(5) > 0.5,
            "empty": np.zeros((0, 3), np.float64)}


def test_our_tensors_round_trip_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    tables = _tables()
    path = tmp_path / "t.npy"
    write_npy_object(path, {k: TensorForPickle(v) for k, v in tables.items()} | {"plain": np.arange(3)})
    out = read_npy_object(path)
    for key, value in tables.items():
        assert out[key].dtype == value.dtype and out[key].shape == value.shape
        np.testing.assert_array_equal(out[key], value)
    np.testing.assert_array_equal(out["plain"], np.arange(3))


def test_written_pickle_has_torchs_structure():
    out = io.BytesIO()
    NamedGlobalPickler(out, protocol=3).dump(TensorForPickle(np.arange(6).reshape(2, 3)))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(out.getvalue())]
    globals_ = [arg for name, arg in ops if name == "GLOBAL"]
    assert globals_ == ["torch._utils _rebuild_tensor_v2", "torch.storage _load_from_bytes",
                        "collections OrderedDict"]
    stream = legacy_storage_bytes(np.arange(3, dtype=np.int64))
    assert b"torch\nLongStorage\n" in stream
    assert stream.endswith(np.int64(3).tobytes() + np.arange(3, dtype="<i8").tobytes())


@needs_torch
def test_torch_reads_what_we_write(tmp_path):
    import torch

    tables = _tables(1)
    path = tmp_path / "t.npy"
    write_npy_object(path, {k: TensorForPickle(v) for k, v in tables.items()})
    out = np.load(path, allow_pickle=True)[()]  # trusted: we wrote it; needs torch to rebuild
    for key, value in tables.items():
        assert isinstance(out[key], torch.Tensor)
        np.testing.assert_array_equal(out[key].numpy(), value)


@needs_torch
def test_we_read_what_torch_writes(tmp_path, monkeypatch):
    import torch

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "long": torch.randint(0, 9000, (79, 17), generator=gen),
        "float": torch.rand(79, 17, 3, generator=gen),
        "double_view": torch.rand(6, 5, dtype=torch.float64, generator=gen)[1:, ::2],  # offset, strides
        "transposed": torch.rand(3, 4, generator=gen).t(),
        "int32": torch.arange(5, dtype=torch.int32),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
    }
    path = tmp_path / "torch_written.npy"
    np.save(path, {**tensors, "numpy": np.arange(3)}, allow_pickle=True)
    monkeypatch.setitem(sys.modules, "torch", None)
    out = read_npy_object(path)
    for key, value in tensors.items():
        expected = value.numpy()
        assert out[key].dtype == expected.dtype and out[key].shape == expected.shape, key
        np.testing.assert_array_equal(out[key], expected)


def _stream(array=np.arange(4, dtype=np.int64)) -> bytes:
    return legacy_storage_bytes(array)


@pytest.mark.parametrize("damage, message", [
    (lambda s: s[:-5], "truncated"),
    (lambda s: b"\x80\x02K\x01." + s[15:], "magic"),
    (lambda s: s.replace(b"M\xe9\x03", b"M\xea\x03", 1), "protocol version"),
])
def test_damaged_storage_stream(tmp_path, damage, message):
    with pytest.raises(ValueError, match=message):
        load_legacy_storage(damage(_stream()))
    # Inside a file, the same damage is a FlameFileError naming the file.
    path = tmp_path / "landmark_embedding.npy"
    write_npy_object(path, {"t": Call("torch.storage", "_load_from_bytes", damage(_stream()))})
    with pytest.raises(FlameFileError, match="landmark_embedding.npy"):
        read_npy_object(path)


def test_tensor_reaching_past_its_storage_is_rejected():
    storage = load_legacy_storage(_stream())
    np.testing.assert_array_equal(rebuild_tensor_v2(storage, 1, (2,), (2,)), [1, 3])
    with pytest.raises(ValueError, match="past the end"):
        rebuild_tensor_v2(storage, 1, (2, 2), (2, 1))
