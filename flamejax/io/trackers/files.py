"""Reading tracker files safely: ``.npz`` / ``.npy`` with ``allow_pickle=False`` and
``torch.save`` zip archives through the allow-list unpickler, without torch.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import numpy as np

from flamejax.io.errors import PathLike, TrackerOutputError, reading
from flamejax.io.safe_pickle import SafeUnpickler
from flamejax.io.torch_pickle import STORAGE_DTYPES, StorageType, TorchStorage


class _TorchZipUnpickler(SafeUnpickler):
    """``data.pkl`` of a ``torch.save`` zip: the allow-list unpickler, plus torch storage types
    as names and storages as persistent ids ``('storage', type, key, location, numel)`` whose
    bytes are the archive member ``<prefix>data/<key>``."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, little_endian: bool):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._order = "<" if little_endian else ">"
        self._storages: dict[str, TorchStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id in torch file: {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype.newbyteorder(self._order)
            member = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(member)
            except KeyError:
                raise ValueError(f"torch file has no data for storage {key!r} ({member})") from None
            if not isinstance(numel, int) or numel < 0 or len(raw) != numel * dtype.itemsize:
                raise ValueError(f"storage {key!r} holds {len(raw)} bytes, its header says "
                                 f"{numel} x {dtype.itemsize}")
            storage = TorchStorage(storage_type.dtype, numel)
            storage.fill(np.frombuffer(raw, dtype).astype(dtype.newbyteorder("=")))
            self._storages[key] = storage
        return self._storages[key]


def load_torch_file(path: PathLike) -> Any:
    """The object in a ``torch.save`` file (zip format, torch >= 1.6), read without torch.

    Tensors come back as NumPy arrays; only the allow-listed globals may appear (NumPy
    arrays, torch tensor rebuilders and storage types, plain containers): anything else is
    refused before it is imported. Every failure is a FlameFileError naming the file.
    """
    _magic(path, 4)  # a missing or unreadable file fails here, with its own message
    with reading(path, "torch.save file"):
        if not zipfile.is_zipfile(path):
            raise TrackerOutputError(path, "not a torch.save zip archive (truncated, or not written "
                                           "by torch.save >= 1.6)")
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise TrackerOutputError(path, f"not a torch.save archive: expected one data.pkl "
                                               f"member, found {len(pickles)}")
            prefix = pickles[0][: -len("data.pkl")]
            little = True
            if f"{prefix}byteorder" in archive.namelist():
                order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise TrackerOutputError(path, f"unknown byte order {order!r}")
                little = order == "little"
            with archive.open(pickles[0]) as fh:
                return _TorchZipUnpickler(fh, archive, prefix, little).load()


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _magic(path: PathLike, n: int = 6) -> bytes:
    with reading(path, "file"), open(path, "rb") as fh:
        return fh.read(n)


def _refuse_pickled(path: PathLike, key: str, exc: ValueError) -> None:
    if "allow_pickle" in str(exc):
        raise TrackerOutputError(path, f"'{key}' is an object array (a pickle); refused: tracker "
                                       "parameter files hold plain numeric arrays") from None


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All members of an ``.npz`` archive, with ``np.load(allow_pickle=False)``.

    An object (pickled) member is refused, not unpickled; every failure is a FlameFileError.
    """
    if _magic(path, 4) != _ZIP_MAGIC:
        raise TrackerOutputError(path, "not an .npz archive (no zip header)")
    out = {}
    with reading(path, ".npz archive"), np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            try:
                out[key] = archive[key]
            except ValueError as exc:
                _refuse_pickled(path, key, exc)
                raise
    return out


def load_npy(path: PathLike) -> np.ndarray:
    """The array in an ``.npy`` file, with ``np.load(allow_pickle=False)``."""
    if _magic(path) != _NPY_MAGIC:
        raise TrackerOutputError(path, "not an .npy file (no NumPy header)")
    with reading(path, ".npy file"):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            _refuse_pickled(path, os.path.basename(path), exc)
            raise
