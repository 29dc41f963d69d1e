"""Loading the pickles that FLAME assets come in, without letting them run code.

A pickle is a small program: it names globals (any importable class or function), calls
them, and restores objects' state (BUILD). ``pickle.load`` on a downloaded
``generic_model.pkl`` would run whatever it names. :class:`SafeUnpickler` closes both doors:

- globals resolve only through an explicit allow-list of data types; anything else is
  refused in ``find_class``, before the name is imported, let alone called;
- BUILD is allowed only on the allow-listed types, with checked state. Allow-listing NumPy
  is not harmless by itself: ``ndarray(shape, object, buffer)`` or a dtype restored with
  made-up field offsets give object arrays over attacker-chosen bytes (a crash at best), so
  ``numpy.ndarray`` is only a token (:class:`NdarrayName`), dtypes must be plain, and a
  dtype's BUILD may not change anything but its byte order.

The allow-list covers what FLAME-related files really contain:

- NumPy arrays, (plain) dtypes and scalars, under NumPy 1.x (``numpy.core.multiarray``)
  and 2.x (``numpy._core.multiarray``) module paths;
- Python 2 builtins as Python 2 named them (``__builtin__``, ``copy_reg``), and
  ``_codecs.encode``, which Python 3 uses to pickle ``bytes`` at protocol 2;
- ``collections.OrderedDict`` (torch's backward-hook dicts);
- SciPy CSC/CSR matrices under every module path SciPy has used (FLAME's ``J_regressor``),
  mapped to :class:`CscMatrixState`/:class:`CsrMatrixState`, which rebuild the matrix from
  its pickled fields with NumPy alone;
- ``chumpy.ch.Ch`` (several FLAME 2020 arrays), mapped to :class:`ChumpyArray`, so chumpy
  need not be installed (it no longer installs on current NumPy/Python);
- the torch functions that rebuild tensors (:mod:`flamejax.io.torch_pickle`), so DECA's
  landmark file loads without torch.

The unpickler is Python's pure-Python one (``pickle._Unpickler``), because the C version's
BUILD cannot be overridden; FLAME files hold few, large objects, so this costs little.
Everything is loaded with ``encoding="latin1"``: Python 2 ``str`` objects (which hold the
raw bytes of Python 2 arrays) then map byte-for-byte, and NumPy accepts them as array data.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import io
import pickle
from typing import Any, BinaryIO, ClassVar, Mapping

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from flamejax.io.errors import PathLike, UnsafePickleError, reading
from flamejax.io.torch_pickle import TORCH_GLOBALS


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: keeps the pickled state dict; :attr:`x` is the array.

    chumpy objects pickle their ``__dict__``; for a plain ``Ch`` (what FLAME files hold) the
    value lives in ``x``. Other chumpy classes (lazy expressions) are not accepted.
    """

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"chumpy Ch state is a {type(state).__name__}, not a dict")
        self.state = state

    @property
    def x(self) -> np.ndarray:
        return to_array(self)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.x if dtype is None else self.x.astype(dtype)


class SparseMatrixState:
    """Stand-in for a pickled SciPy compressed sparse matrix: its state, and :meth:`toarray`.

    SciPy pickles a matrix's ``__dict__``: ``data``, ``indices``, ``indptr`` and the shape as
    ``_shape`` (``shape`` in old versions). ``format`` is "csc" (``indptr`` runs over columns)
    or "csr" (over rows); the subclasses fix it.
    """

    format: ClassVar[str]

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"sparse matrix state is a {type(state).__name__}, not a dict")
        self.state = state

    @property
    def shape(self) -> tuple[int, int]:
        shape = self.state.get("_shape", self.state.get("shape"))
        if shape is None or len(shape) != 2:
            raise ValueError(f"{self.format} matrix without a 2-d shape")
        return int(shape[0]), int(shape[1])

    def toarray(self) -> np.ndarray:
        """The dense (rows, cols) matrix; duplicate entries add up, as in SciPy."""
        try:
            data = to_array(self.state["data"]).reshape(-1)
            indices = to_array(self.state["indices"]).reshape(-1)
            indptr = to_array(self.state["indptr"]).reshape(-1)
        except KeyError as exc:
            raise ValueError(f"{self.format} matrix without its {exc.args[0]!r} array") from None
        integer_ids = indices.dtype.kind in "iu" and indptr.dtype.kind in "iu"
        if data.dtype.kind not in "biuf" or not integer_ids:
            raise ValueError(f"{self.format} matrix with non-numeric data or non-integer indices")
        rows, cols = self.shape
        n_major, n_minor = (cols, rows) if self.format == "csc" else (rows, cols)
        if (indptr.size != n_major + 1 or indices.size != data.size or indptr[0] != 0
                or indptr[-1] != data.size or np.any(np.diff(indptr) < 0)):
            raise ValueError(f"inconsistent {self.format} matrix of shape {(rows, cols)}")
        if indices.size and (indices.min() < 0 or indices.max() >= n_minor):
            raise ValueError(f"{self.format} matrix index out of range for shape {(rows, cols)}")
        major = np.repeat(np.arange(n_major), np.diff(indptr))
        dense = np.zeros((rows, cols), dtype=data.dtype)
        if self.format == "csc":
            np.add.at(dense, (indices, major), data)
        else:
            np.add.at(dense, (major, indices), data)
        return dense


class CscMatrixState(SparseMatrixState):
    format = "csc"


class CsrMatrixState(SparseMatrixState):
    format = "csr"


class NdarrayName:
    """What the name ``numpy.ndarray`` resolves to: a token, never the real class.

    Real pickles use ``numpy.ndarray`` only as the subtype argument of ``_reconstruct``.
    Handing out the class itself would let a hostile pickle *call* it (REDUCE, NEWOBJ or
    ``copy_reg._reconstructor``) as ``ndarray(shape, object, buffer=bytes)``: an object
    array over attacker-chosen pointers, which crashes the process or worse. The token
    cannot be instantiated; :func:`_reconstruct` swaps it back for the real class.
    """

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray may only appear as _reconstruct's subtype")


# Plain dtype kinds: booleans, integers, floats, complex, byte and unicode strings, objects.
# No structured/void, subarray or datetime dtypes: FLAME files hold none, and structured
# dtypes are how object fields get placed at arbitrary offsets.
_PLAIN_KINDS = frozenset("biufcSUO")


def _plain_dtype(spec, align=False, copy=False) -> np.dtype:
    """``numpy.dtype(spec)`` for a type string naming a plain dtype (what pickles contain)."""
    if not isinstance(spec, (str, bytes)):
        raise pickle.UnpicklingError(f"refused numpy dtype spec of type {type(spec).__name__}")
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec)
    if dtype.kind not in _PLAIN_KINDS or dtype.names is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"refused numpy dtype {dtype!r} (only plain dtypes are allowed)")
    return dtype


def _reconstruct(subtype, shape, typecode):
    """NumPy's ``_reconstruct`` (an empty array that BUILD then fills), for plain ndarrays only.

    NumPy's ``__setstate__`` refuses raw bytes for dtypes holding objects, so filling is safe.
    """
    if subtype is not NdarrayName:
        raise pickle.UnpicklingError("numpy _reconstruct of anything but numpy.ndarray refused")
    return _np_multiarray._reconstruct(np.ndarray, shape, _plain_dtype(typecode))


def _frombuffer(buffer, dtype, shape, order):
    """NumPy's ``_frombuffer`` (protocol-5 array pickles), for dtypes built by the pickle."""
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError("numpy _frombuffer needs a dtype object")
    return _np_numeric._frombuffer(buffer, dtype, shape, order)


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """A dtype's BUILD may restate what its constructor made, with any byte order: no fields,
    no subarray, no new item size (NumPy would apply those to string and void dtypes)."""
    own = dtype.__reduce__()[2]
    ok = (isinstance(state, tuple) and len(state) == len(own) and state[1] in ("<", ">", "|", "=")
          and all(a == b for i, (a, b) in enumerate(zip(state, own)) if i != 1))
    if not ok:
        raise pickle.UnpicklingError(f"refused dtype state {state!r} for {dtype!r}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle bytes, restricted to that one use."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    for numpy_core in ("numpy.core", "numpy._core"):
        table[(f"{numpy_core}.multiarray", "_reconstruct")] = _reconstruct
        # NumPy refuses to build object dtypes from raw bytes in both (checked in the tests).
        table[(f"{numpy_core}.multiarray", "scalar")] = _np_multiarray.scalar
        table[(f"{numpy_core}.numeric", "_frombuffer")] = _frombuffer
    table[("numpy", "ndarray")] = NdarrayName
    table[("numpy", "dtype")] = _plain_dtype
    for builtins in ("__builtin__", "builtins"):
        table[(builtins, "object")] = object
        table[(builtins, "set")] = set
    for copy_reg in ("copy_reg", "copyreg"):
        table[(copy_reg, "_reconstructor")] = copyreg._reconstructor
    table[("_codecs", "encode")] = _latin1_encode
    table[("collections", "OrderedDict")] = collections.OrderedDict
    # SciPy moved its matrix classes from scipy.sparse.<fmt> to scipy.sparse._<fmt> (1.8);
    # before 1.x both derived from scipy.sparse.compressed; both names appear in real files.
    for fmt, state_cls in (("csc", CscMatrixState), ("csr", CsrMatrixState)):
        for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}",
                       "scipy.sparse.compressed", "scipy.sparse._compressed"):
            table[(module, f"{fmt}_matrix")] = state_cls
    table[("chumpy.ch", "Ch")] = ChumpyArray
    table.update(TORCH_GLOBALS)
    return table


ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = _allowed_globals()


# Types whose state a pickle may restore (BUILD), each through its own __setstate__.
_BUILDABLE = (np.ndarray, np.dtype, ChumpyArray, SparseMatrixState)


class SafeUnpickler(pickle._Unpickler):  # noqa: SLF001 - see module docstring
    """Unpickler that resolves globals only through :data:`ALLOWED_GLOBALS` and restores
    state (BUILD) only for NumPy arrays and dtypes and the stand-in classes.

    ``find_class`` sees the module names exactly as written in the pickle (Python 2 names
    included), so the allow-list spells out both spellings rather than relying on
    ``fix_imports``.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, file: BinaryIO):
        super().__init__(file, encoding="latin1")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _BUILDABLE):
            raise pickle.UnpicklingError(f"refused to restore the state of a {type(inst).__name__}")
        if isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        # ndarray.__setstate__ checks the data against shape and dtype itself, and refuses
        # raw bytes for dtypes holding objects; the dtype in the state comes from this pickle,
        # so it is one of the plain, checked dtypes above.
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only NumPy arrays, SciPy sparse "
                "matrices, chumpy Ch arrays and torch tensors may appear in these files") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported in these files")


def loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`."""
    return SafeUnpickler(io.BytesIO(data)).load()


def load_pickle(path: PathLike) -> Any:
    """Unpickle the file at ``path`` safely; any failure is a :class:`FlameFileError`."""
    with reading(path, "pickle"), open(path, "rb") as fh:
        return SafeUnpickler(fh).load()


def to_array(obj: Any, depth: int = 0) -> np.ndarray:
    """A NumPy array from an unpickled value: arrays, chumpy and sparse stand-ins, lists."""
    if depth > 8:  # a Ch whose x is a Ch whose x is ... : a hostile file, not FLAME
        raise ValueError("nested chumpy objects too deep")
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, ChumpyArray):
        if "x" not in obj.state:
            raise ValueError(f"chumpy Ch object without an 'x' array (fields: {sorted(obj.state)})")
        return to_array(obj.state["x"], depth + 1)
    if isinstance(obj, SparseMatrixState):
        return obj.toarray()
    if isinstance(obj, (list, tuple, int, float, np.generic)):
        return np.asarray(obj)
    raise TypeError(f"expected an array, got a {type(obj).__name__}")


def describe(obj: Any) -> str:
    """Short type description of an unpickled value, for error messages."""
    if isinstance(obj, np.ndarray):
        return f"array {obj.dtype} {obj.shape}"
    return type(obj).__name__


__all__ = [
    "ALLOWED_GLOBALS",
    "ChumpyArray",
    "CscMatrixState",
    "CsrMatrixState",
    "SafeUnpickler",
    "SparseMatrixState",
    "describe",
    "load_pickle",
    "loads",
    "to_array",
]
