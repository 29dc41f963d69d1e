""".npy and .npz files, read without ``allow_pickle=True``.

An ``.npy`` file of dtype ``object`` (``np.save`` of a dict, as DECA's and RingNet's landmark
files are) stores its contents as a pickle after the header; ``np.load(allow_pickle=True)``
would run it. Here the header is parsed with :mod:`numpy.lib.format` and the pickle payload
goes through :class:`~flamejax.io.safe_pickle.SafeUnpickler`. Arrays of plain dtypes are
read by NumPy itself with pickles disallowed.

Writers produce the same layout ``np.save`` does, but object payloads are pickled with a
caller-chosen pickler (torch tensors without torch, see :mod:`flamejax.io.torch_pickle`).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, BinaryIO, Callable

import numpy as np
from numpy.lib import format as npy_format

from flamejax.io.errors import FlameFileError, PathLike, reading
from flamejax.io.pickle_writer import NamedGlobalPickler
from flamejax.io.safe_pickle import SafeUnpickler

# The pickle protocol np.save used for object arrays through NumPy 1.x; every reader since
# Python 3.0 understands it.
OBJECT_PICKLE_PROTOCOL = 3


def read_npy_stream(fh: BinaryIO) -> np.ndarray:
    """Read one ``.npy`` payload from an open binary stream (object arrays unpickled safely)."""
    start = fh.tell()
    version = npy_format.read_magic(fh)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if not dtype.hasobject:
        fh.seek(start)
        return npy_format.read_array(fh, allow_pickle=False)
    array = SafeUnpickler(fh).load()
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise ValueError(f"object .npy payload is not the {tuple(shape)} array its header announces")
    return array


def read_npy(path: PathLike) -> np.ndarray:
    """The array stored in the ``.npy`` file at ``path``; failures are FlameFileErrors."""
    with reading(path, ".npy file"), open(path, "rb") as fh:
        return read_npy_stream(fh)


def read_npy_object(path: PathLike) -> Any:
    """The Python object that ``np.save(path, obj)`` stored (a 0-d object array's item)."""
    array = read_npy(path)
    if array.dtype != object or array.shape != ():
        raise FlameFileError(path, f"expected np.save of a single object (e.g. a dict), found an "
                                   f"array {array.dtype} {array.shape}")
    return array[()]


def read_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` archive at ``path``, by name (object members read safely)."""
    with reading(path, ".npz archive"), zipfile.ZipFile(path) as archive:
        out = {}
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            out[member[: -len(".npy")]] = read_npy_stream(io.BytesIO(archive.read(member)))
        return out


def write_npy_object(path: PathLike, obj: Any,
                     pickler: Callable[..., NamedGlobalPickler] = NamedGlobalPickler) -> None:
    """``np.save(path, obj)`` for a Python object, pickled by ``pickler(file, protocol)``."""
    array = np.empty((), dtype=object)
    array[()] = obj
    with open(path, "wb") as fh:
        npy_format.write_array_header_1_0(fh, npy_format.header_data_from_array_1_0(array))
        pickler(fh, protocol=OBJECT_PICKLE_PROTOCOL).dump(array)
