"""Torch tensors inside pickles, read (and written) without torch.

DECA, EMOCA and SMIRK ship ``landmark_embedding.npy``: ``np.save`` of a dict in which two
tables are torch tensors, pickled with plain pickle. A tensor pickles as a call

    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                    requires_grad, backward_hooks[, metadata])

(``_rebuild_tensor`` in torch < 0.4 has only the first four arguments; sizes and strides are
in elements), and its storage pickles as ``torch.storage._load_from_bytes(b)`` where ``b`` is
a *legacy* (pre-zip) ``torch.save`` stream, five parts back to back:

1. pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. pickle of the protocol version, 1001;
3. pickle of a sys-info dict (``little_endian``, ``type_sizes``, ...);
4. pickle of the object (here: the storage), in which every storage is a persistent id
   ``('storage', storage_type, key, location, numel, view_metadata)``; ``storage_type`` is
   a global such as ``torch.FloatStorage`` (``torch.cuda.FloatStorage`` for GPU storages);
   ``view_metadata`` is None since torch 0.4 (storage views, which older versions wrote
   there, are not supported);
5. pickle of the list of storage keys, then per key an int64 element count followed by the
   raw elements, in the byte order sys-info states.

We verified this against files written by torch 2.13 (``tests/test_io_torch.py`` compares
with real torch whenever it is importable).

Everything torch-specific that does not depend on the container lives here: the storage
type table, :class:`TorchStorage`, :func:`rebuild_tensor_v2`. The zip format of newer
``torch.save`` files (metrical-tracker's ``.frame``) pickles the same persistent ids, with
``data/<key>`` zip members instead of part 5, so its reader only needs a new persistent-id
loader on top of these.

Tensors come back as NumPy arrays (a copy, C-contiguous).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from typing import Any, Optional

import numpy as np

from flamejax.io.errors import UnsafePickleError
from flamejax.io.pickle_writer import GlobalRef, NamedGlobalPickler

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# What torch's legacy writer states about the machine; we write the same for our files.
_SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 4}}

# torch storage class name -> element dtype (little-endian; swapped if a stream says otherwise).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_STORAGE_NAME_FOR_DTYPE = {dt.newbyteorder("<"): name for name, dt in STORAGE_DTYPES.items()}


class StorageType:
    """What ``find_class`` returns for ``torch.<X>Storage``: only carries the element dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"StorageType({self.name})"


class TorchStorage:
    """A torch storage as a flat NumPy buffer of ``numel`` elements.

    Created empty when its persistent id is read; the stream's data section fills it
    afterwards (:meth:`fill`).
    """

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = int(numel)
        self._data: Optional[np.ndarray] = None

    def fill(self, data: np.ndarray) -> None:
        if data.shape != (self.numel,):
            raise ValueError(f"storage holds {data.size} elements, its header says {self.numel}")
        self._data = data

    @property
    def array(self) -> np.ndarray:
        """(numel,) elements in native byte order."""
        if self._data is None:
            raise ValueError("torch storage used before its data was read")
        return self._data


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                      backward_hooks=None, metadata=None) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: the tensor's elements as an array.

    Gradient flags, hooks and metadata mean nothing without torch and are dropped.
    """
    if not isinstance(storage, TorchStorage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a torch storage")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise ValueError(f"bad tensor layout: size {size}, stride {stride}, offset {offset}")
    flat = storage.array
    if 0 in size:
        return np.zeros(size, flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise ValueError(f"tensor of size {size} (stride {stride}, offset {offset}) reaches "
                         f"past the end of its {flat.size}-element storage")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    return np.array(view, order="C")


def rebuild_tensor(storage, storage_offset, size, stride) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor`` (torch < 0.4)."""
    return rebuild_tensor_v2(storage, storage_offset, size, stride)


class _LegacyStreamUnpickler(pickle._Unpickler):  # noqa: SLF001 - pure Python: BUILD overridable
    """Reads the pickles inside a legacy torch stream: only storage types may be named, and
    no object state may be restored (the stream holds only ids, ints, strings and dicts)."""

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, file, storages: dict[str, TorchStorage]):
        super().__init__(file, encoding="latin1")
        self._storages = storages

    def _refuse_build(self):
        raise pickle.UnpicklingError("object state (BUILD) is not allowed in a torch storage stream")

    dispatch[pickle.BUILD[0]] = _refuse_build

    def find_class(self, module: str, name: str):
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        raise UnsafePickleError(f"refused global {module}.{name} in a torch storage stream "
                                "(only torch storage types may appear there)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id in torch stream: {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {pid!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = TorchStorage(storage_type.dtype, numel)
        return self._storages[key]


def load_legacy_storage(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: parse a legacy ``torch.save`` stream.

    Returns the saved object with every storage a filled :class:`TorchStorage` (for the
    files we read, the object is a single storage).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"torch storage payload is a {type(data).__name__}, not bytes")
    stream = io.BytesIO(data)
    storages: dict[str, TorchStorage] = {}

    def next_pickle():
        return _LegacyStreamUnpickler(stream, storages).load()

    if next_pickle() != LEGACY_MAGIC:
        raise ValueError("torch storage payload does not start with torch's legacy magic number")
    version = next_pickle()
    if version != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy torch protocol version {version!r}")
    sys_info = next_pickle()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    order = "<" if little else ">"
    result = next_pickle()
    keys = next_pickle()
    if not isinstance(keys, list):
        raise ValueError("torch stream has no storage key list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"torch stream has data for unknown storage {key!r}")
        header = stream.read(8)
        if len(header) != 8:
            raise ValueError("torch stream truncated in a storage header")
        (numel,) = struct.unpack(order + "q", header)
        dtype = storage.dtype.newbyteorder(order)
        raw = stream.read(numel * dtype.itemsize)
        if numel < 0 or len(raw) != numel * dtype.itemsize:
            raise ValueError("torch stream truncated in storage data")
        storage.fill(np.frombuffer(raw, dtype).astype(dtype.newbyteorder("=")))
    return result


# The globals a pickle containing torch tensors may name, for the allow-list unpickler.
TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): load_legacy_storage,
}


# ----------------------------------------------------------------------------------------------
# Writing: the same byte layout, without torch.

_REBUILD_TENSOR_V2 = GlobalRef("torch._utils", "_rebuild_tensor_v2")
_LOAD_FROM_BYTES = GlobalRef("torch.storage", "_load_from_bytes")
_STORAGE_TYPE_REFS = {name: GlobalRef("torch", name) for name in STORAGE_DTYPES}


class TensorForPickle:
    """Wrap a NumPy array so that :class:`NamedGlobalPickler` writes it as a CPU torch tensor.

    The array is stored contiguously in its own storage (offset 0, C strides), as
    ``torch.save`` does for a freshly created tensor.
    """

    def __init__(self, array: np.ndarray):
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<")
        if dtype not in _STORAGE_NAME_FOR_DTYPE:
            raise TypeError(f"no torch storage type for dtype {array.dtype}")
        self.array = array.astype(dtype)

    def __reduce__(self):
        strides = tuple(s // self.array.itemsize for s in self.array.strides)
        return (_REBUILD_TENSOR_V2,
                (_StorageForPickle(self.array), 0, self.array.shape, strides, False,
                 collections.OrderedDict()))


class _StorageForPickle:
    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        return (_LOAD_FROM_BYTES, (legacy_storage_bytes(self.array),))


class _StreamPickler(NamedGlobalPickler):
    """Writes part 4 of a legacy stream: the storage as a persistent id."""

    def __init__(self, file, storage: np.ndarray, key: str):
        super().__init__(file, protocol=2)
        self._storage, self._key = storage, key

    def persistent_id(self, obj):
        if obj is self._storage:
            name = _STORAGE_NAME_FOR_DTYPE[obj.dtype.newbyteorder("<")]
            return ("storage", _STORAGE_TYPE_REFS[name], self._key, "cpu", obj.size, None)
        return None


def legacy_storage_bytes(array: np.ndarray, key: str = "0") -> bytes:
    """The legacy ``torch.save`` stream of one CPU storage holding ``array``'s elements."""
    flat = np.ascontiguousarray(array).reshape(-1)
    flat = flat.astype(flat.dtype.newbyteorder("<"))
    out = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, _SYS_INFO):
        pickle.dump(header, out, protocol=2)
    _StreamPickler(out, flat, key).dump(flat)
    pickle.dump([key], out, protocol=2)
    out.write(struct.pack("<q", flat.size))
    out.write(flat.tobytes())
    return out.getvalue()
