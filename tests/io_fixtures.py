"""Helpers for the flamejax.io tests: small random models, and pickles written the way the real
FLAME assets were (Python 2, NumPy 1.x, old SciPy, chumpy), without any of those installed.

``Py2StylePickler`` writes protocol-2 pickles as Python 2's cPickle did: ``str``/``bytes`` as
Python 2 byte strings (SHORT_BINSTRING/BINSTRING, which Python 3 reads back as ``str`` under
``encoding="latin1"``), builtins as ``__builtin__``/``copy_reg``, NumPy arrays through
``numpy.core.multiarray._reconstruct``, SciPy matrices under ``scipy.sparse.csc``, and
:class:`FakeCh` as ``chumpy.ch.Ch`` with chumpy's state dict. Nothing is registered in
``sys.modules``: the names are written directly.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import struct
import zipfile

import jax.numpy as jnp
import numpy as np

import flamejax as fj
from flamejax.io.pickle_writer import GlobalRef, NamedGlobalPickler
from flamejax.landmarks import LandmarkEmbedding

N_JOINTS = 5


def dumps(obj, protocol: int = 2) -> bytes:
    """Pickle with :class:`NamedGlobalPickler` (so :class:`Call` payloads can name anything)."""
    out = io.BytesIO()
    NamedGlobalPickler(out, protocol=protocol).dump(obj)
    return out.getvalue()


class Call:
    """Pickles as a call of the global ``module.name`` with ``args`` (without importing it),
    followed by BUILD with ``state`` if given. Used to write hostile and hand-made pickles."""

    def __init__(self, module, name, *args, state=None):
        self.ref, self.args, self.state = GlobalRef(module, name), args, state

    def __reduce__(self):
        return (self.ref, self.args) if self.state is None else (self.ref, self.args, self.state)


class FakeCh:
    """Pickles exactly like a plain ``chumpy.ch.Ch`` holding the array ``x``."""

    def __init__(self, x):
        # chumpy's __getstate__ drops _parents and _cache and keeps the rest of __dict__.
        self.__dict__.update(x=np.asarray(x), _dirty_vars=set(), _itr=None, _depends_on_deps={},
                             _make_dense=False, _make_sparse=False)

    def __reduce_ex__(self, protocol):
        if protocol >= 2:
            return copyreg.__newobj__, (FakeCh,), dict(self.__dict__)
        return copyreg._reconstructor, (FakeCh, object, None), dict(self.__dict__)


_OLD_MODULES = {
    "numpy._core.multiarray": "numpy.core.multiarray",
    "numpy._core.numeric": "numpy.core.numeric",
    "scipy.sparse._csc": "scipy.sparse.csc",
    "scipy.sparse._csr": "scipy.sparse.csr",
}


class Py2StylePickler(NamedGlobalPickler):
    """See module docstring. ``extra_names``: object -> (module, name) to write it as."""

    dispatch = dict(NamedGlobalPickler.dispatch)

    def __init__(self, file, protocol=2, extra_names=None):
        super().__init__(file, protocol=protocol, fix_imports=True)
        self.extra_names = {id(k): v for k, v in (extra_names or {}).items()}

    def global_name(self, obj):
        named = super().global_name(obj)
        if named is not None:
            return named
        if id(obj) in self.extra_names:
            return self.extra_names[id(obj)]
        if obj is FakeCh:
            return "chumpy.ch", "Ch"
        module = getattr(obj, "__module__", None)
        if module in _OLD_MODULES:
            return _OLD_MODULES[module], obj.__qualname__
        return None  # builtins: Python's fix_imports writes __builtin__ / copy_reg

    def save_py2_string(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_dumps(obj, protocol: int = 2, extra_names=None) -> bytes:
    out = io.BytesIO()
    Py2StylePickler(out, protocol, extra_names).dump(obj)
    return out.getvalue()


def random_bary(rng, shape):
    b = rng.uniform(0.05, 1.0, size=shape + (3,))
    return b / b.sum(-1, keepdims=True)


def random_embedding(rng, n_faces: int, mediapipe: bool = True, dtype=jnp.float32) -> LandmarkEmbedding:
    ids = lambda shape: jnp.asarray(rng.integers(0, n_faces, size=shape), jnp.int32)  # noqa: E731
    bary = lambda shape: jnp.asarray(random_bary(rng, shape), dtype)  # noqa: E731
    return LandmarkEmbedding(
        static_faces=ids((51,)), static_bary=bary((51,)),
        dynamic_faces=ids((79, 17)), dynamic_bary=bary((79, 17)),
        mediapipe_faces=ids((105,)) if mediapipe else None,
        mediapipe_bary=bary((105,)) if mediapipe else None)


def random_model(seed: int = 0, n_verts: int = 60, n_faces: int = 100, n_shape: int = 12,
                 n_expr: int = 8, dtype=jnp.float32, landmarks: bool = False) -> fj.FlameModel:
    """A small random FLAME-structured model, built directly (no io, no synthetic)."""
    rng = np.random.default_rng(seed)
    j_regressor = np.zeros((N_JOINTS, n_verts))
    for j in range(N_JOINTS):
        ids = rng.choice(n_verts, size=6, replace=False)
        j_regressor[j, ids] = rng.dirichlet(np.ones(6))
    faces = np.stack([rng.choice(n_verts, size=3, replace=False) for _ in range(n_faces)])
    masks = {"face": jnp.asarray(rng.choice(n_verts, 20, replace=False), jnp.int32),
             "lips": jnp.asarray(rng.choice(n_verts, 7, replace=False), jnp.int32)}
    return fj.FlameModel(
        v_template=jnp.asarray(rng.normal(0, 0.08, (n_verts, 3)), dtype),
        shapedirs=jnp.asarray(rng.normal(0, 0.004, (n_shape + n_expr, n_verts, 3)), dtype),
        posedirs=jnp.asarray(rng.normal(0, 0.002, (36, n_verts, 3)), dtype),
        j_regressor=jnp.asarray(j_regressor, dtype),
        weights=jnp.asarray(rng.dirichlet(np.full(N_JOINTS, 0.7), size=n_verts), dtype),
        faces=jnp.asarray(faces, jnp.int32),
        landmarks=random_embedding(rng, n_faces, dtype=dtype) if landmarks else None,
        masks=masks if landmarks else {},
        n_shape=n_shape,
    )


def raw_flame_file(seed: int = 0, n_verts: int = 60, n_faces: int = 100, n_expr: int = 100) -> dict:
    """Random arrays in FLAME's file layout and dtypes: 300 shape + n_expr expression columns."""
    rng = np.random.default_rng(seed)
    j_regressor = np.zeros((N_JOINTS, n_verts))
    for j in range(N_JOINTS):
        ids = rng.choice(n_verts, size=6, replace=False)
        j_regressor[j, ids] = rng.dirichlet(np.ones(6))
    v_template = rng.normal(0, 0.08, (n_verts, 3))
    return {
        "v_template": v_template,
        "f": np.stack([rng.choice(n_verts, size=3, replace=False) for _ in range(n_faces)]).astype(np.uint32),
        "shapedirs": rng.normal(0, 0.004, (n_verts, 3, 300 + n_expr)),
        "posedirs": rng.normal(0, 0.002, (n_verts, 3, 36)),
        "J_regressor": j_regressor,
        "weights": rng.dirichlet(np.full(N_JOINTS, 0.7), size=n_verts),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": j_regressor @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def flame2020_pickle(raw: dict, protocol: int = 2) -> bytes:
    """``raw`` pickled as FLAME 2020's generic_model.pkl: Python 2, chumpy arrays, csc J_regressor."""
    import scipy.sparse

    data = dict(raw)
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
        if key in data:
            data[key] = FakeCh(raw[key])
    if "J_regressor" in data:
        data["J_regressor"] = scipy.sparse.csc_matrix(raw["J_regressor"])
    return py2_dumps(data, protocol)


# ---------------------------------------------------------------------------------------------
# torch.save's zip format (torch >= 1.6), written without torch: metrical-tracker / Pixel3DMM
# ``.frame`` files. The archive holds ``<name>/data.pkl`` (protocol-2 pickle in which every
# storage is a persistent id ``('storage', torch.<T>Storage, key, 'cpu', numel)``), one
# ``<name>/data/<key>`` member of raw little-endian elements per storage, and the small
# ``.format_version``, ``.storage_alignment``, ``byteorder``, ``version`` and
# ``.data/serialization_id`` records torch 2.x writes; ``<name>`` is the file's stem, as in
# torch. (torch also pads members to 64-byte offsets; readers do not depend on it.) NumPy arrays
# in the object pickle as plain NumPy arrays, exactly as in the trackers' files.

_ZIP_STORAGE_NAMES = {np.dtype("<f4"): "FloatStorage", np.dtype("<f8"): "DoubleStorage",
                      np.dtype("<i8"): "LongStorage", np.dtype("<i4"): "IntStorage",
                      np.dtype("?"): "BoolStorage", np.dtype("u1"): "ByteStorage"}
_ZIP_STORAGE_REFS = {name: GlobalRef("torch", name) for name in _ZIP_STORAGE_NAMES.values()}
_REBUILD_V2 = GlobalRef("torch._utils", "_rebuild_tensor_v2")


class ZipTensor:
    """Pickles as a CPU torch tensor whose storage lives in the zip (``data/<key>``)."""

    def __init__(self, array):
        array = np.ascontiguousarray(array)
        self.array = array.astype(array.dtype.newbyteorder("<"))
        self.storage = _ZipStorage(self.array)

    def __reduce__(self):
        strides = tuple(s // self.array.itemsize for s in self.array.strides)
        return (_REBUILD_V2, (self.storage, 0, self.array.shape, strides, False,
                              collections.OrderedDict()))


class _ZipStorage:
    def __init__(self, array):
        self.array = array


class _ZipPickler(NamedGlobalPickler):
    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.storages: list = []

    def persistent_id(self, obj):
        if isinstance(obj, _ZipStorage):
            key = str(len(self.storages))
            self.storages.append((key, obj.array))
            name = _ZIP_STORAGE_NAMES[obj.array.dtype]
            return ("storage", _ZIP_STORAGE_REFS[name], key, "cpu", obj.array.size)
        return None


def torch_zip_bytes(obj, name: str = "archive", data_pkl: bytes | None = None) -> bytes:
    """The bytes ``torch.save(obj, f"{name}.xxx")`` writes (``data_pkl`` replaces the pickle)."""
    pkl = io.BytesIO()
    pickler = _ZipPickler(pkl)
    pickler.dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", pkl.getvalue() if data_pkl is None else data_pkl)
        archive.writestr(f"{name}/.format_version", "1")
        archive.writestr(f"{name}/.storage_alignment", "64")
        archive.writestr(f"{name}/byteorder", "little")
        for key, array in pickler.storages:
            archive.writestr(f"{name}/data/{key}", array.tobytes())
        archive.writestr(f"{name}/version", "3\n")
        archive.writestr(f"{name}/.data/serialization_id", "0" * 40)
    return out.getvalue()


def torch_save_zip(path, obj, data_pkl: bytes | None = None) -> None:
    """Write ``obj`` to ``path`` as torch.save would (archive name = the file's stem)."""
    import pathlib

    path = pathlib.Path(path)
    path.write_bytes(torch_zip_bytes(obj, path.stem, data_pkl))
