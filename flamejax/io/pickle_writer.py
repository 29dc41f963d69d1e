"""A pickler that can name globals which do not exist in this Python process.

Some formats we must *write* refer to code we neither have nor want: DECA's
``landmark_embedding.npy`` holds torch tensors, pickled as calls to
``torch._utils._rebuild_tensor_v2``; a FLAME 2020 model names ``chumpy.ch.Ch``. Python's
pickler only writes a global after importing it and checking that the name leads back to the
same object, so it cannot write either without torch or chumpy installed.

:class:`NamedGlobalPickler` writes a :class:`GlobalRef` as a plain ``GLOBAL module name``
opcode, with no import and no check. It builds on the pure-Python ``pickle._Pickler`` (the
C pickler's ``save_global`` cannot be overridden); that class is private but has kept this
interface since Python 3.0; it handles large arrays well (their bytes are written in one
piece), but is slower than the C pickler on many small objects.

:class:`LegacyNamesPickler` writes NumPy and SciPy objects under the module paths that
NumPy 1.x and every SciPy release can import (``numpy.core.multiarray._reconstruct``,
``scipy.sparse.csc_matrix``, ...), not NumPy 2's ``numpy._core`` or SciPy's private
``scipy.sparse._csc``, which NumPy < 1.26 and SciPy < 1.8 cannot resolve (numpy issue
28340). Files meant for other people's environments (exported FLAME models) use it.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from typing import Any, Mapping, Optional


@dataclasses.dataclass(frozen=True, eq=False)
class GlobalRef:
    """The name of a global (``module``, ``name``) to be written into a pickle as-is.

    Use it as the callable of a ``__reduce__`` tuple. It is callable only because the
    pickler insists that reduce functions are; calling it is an error. Identity matters:
    the pickler memoises globals by ``id``, so keep instances alive (module constants).
    """

    module: str
    name: str

    def __call__(self, *args, **kwargs):
        raise TypeError(f"GlobalRef({self.module}.{self.name}) only names a global for pickling")

    def __reduce__(self):
        raise pickle.PicklingError(
            f"GlobalRef({self.module}.{self.name}) can only be written by NamedGlobalPickler")


class NamedGlobalPickler(pickle._Pickler):  # noqa: SLF001 - see module docstring
    """Pickler that writes :class:`GlobalRef` objects as globals without importing them.

    Subclasses may also override :meth:`global_name` to write real classes or functions
    under other names (e.g. the tests write numpy 1.x module paths, as old files hold).
    """

    def global_name(self, obj: Any) -> Optional[tuple[str, str]]:
        """(module, name) to write for the global ``obj``, or None for Python's default."""
        if isinstance(obj, GlobalRef):
            return obj.module, obj.name
        return None

    def reducer_override(self, obj: Any):
        # A string answer means "save this object as a global": routes GlobalRef to save_global.
        if isinstance(obj, GlobalRef):
            return obj.name
        return NotImplemented

    def save_global(self, obj: Any, name: Optional[str] = None) -> None:
        named = self.global_name(obj)
        if named is None:
            super().save_global(obj, name)
            return
        module, qualname = named
        # GLOBAL is valid in every protocol; it is what Python 2 wrote for every class.
        self.write(pickle.GLOBAL + module.encode("utf-8") + b"\n" + qualname.encode("utf-8") + b"\n")
        self.memoize(obj)


# Module paths that exist only in NumPy >= 1.26 (numpy._core) or SciPy >= 1.8 (scipy.sparse._csc
# and the like): a global from one of these would make the file unreadable for older versions.
NEW_ONLY_MODULES = ("numpy._core", "scipy.sparse._")


@functools.lru_cache(maxsize=None)
def legacy_global_names() -> Mapping[int, tuple[Any, str, str]]:
    """``id(obj) -> (obj, module, name)`` for the NumPy and SciPy globals that pickles of
    arrays, dtypes, scalars and sparse matrices name, each under a path old versions import.

    The objects are taken from what NumPy and SciPy really pickle (``np.zeros(1).__reduce__()``
    ...), so the table follows NumPy's internals rather than guessing their module names.
    NumPy 2 still imports ``numpy.core.multiarray._reconstruct`` and ``.scalar`` silently (it
    keeps them for old pickles). For SciPy the public ``scipy.sparse.csc_matrix`` is written,
    which every SciPy version has, rather than ``scipy.sparse.csc.csc_matrix`` (what Python 2
    era files hold): that module is deprecated since SciPy 1.8 and goes away in SciPy 2.0.
    """
    import numpy as np

    names: dict[int, tuple[Any, str, str]] = {}

    def add(obj: Any, module: str, name: str) -> None:
        names[id(obj)] = (obj, module, name)

    add(np.zeros(1).__reduce__()[0], "numpy.core.multiarray", "_reconstruct")
    add(np.float64(0).__reduce__()[0], "numpy.core.multiarray", "scalar")
    # Protocol 5 pickles arrays through _frombuffer (NumPy >= 1.16).
    add(np.zeros(1).__reduce_ex__(5)[0], "numpy.core.numeric", "_frombuffer")
    add(np.ndarray, "numpy", "ndarray")
    add(np.dtype, "numpy", "dtype")
    try:
        import scipy.sparse
    except ImportError:  # no SciPy: no sparse matrices to write either
        return names
    for fmt in ("bsr", "coo", "csc", "csr", "dia", "dok", "lil"):
        add(getattr(scipy.sparse, f"{fmt}_matrix"), "scipy.sparse", f"{fmt}_matrix")
    return names


class LegacyNamesPickler(NamedGlobalPickler):
    """Pickler whose NumPy/SciPy globals old NumPy (1.x) and SciPy (< 1.8) can import.

    Globals in :func:`legacy_global_names` are written under their old paths; any other
    global from ``numpy._core`` or a private ``scipy.sparse._`` module is refused with a
    PicklingError (e.g. SciPy's sparse *arrays*, which old SciPy lacks), rather than written
    into a file that old environments cannot open. Everything else pickles as usual.
    """

    def global_name(self, obj: Any) -> Optional[tuple[str, str]]:
        named = super().global_name(obj)
        if named is not None:
            return named
        entry = legacy_global_names().get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1], entry[2]
        module = getattr(obj, "__module__", None) or ""
        if module.startswith(NEW_ONLY_MODULES):
            raise pickle.PicklingError(
                f"{module}.{getattr(obj, '__qualname__', obj)!s} has no name that NumPy 1.x / "
                "SciPy < 1.8 can import; convert it to a NumPy array or SciPy matrix first")
        return None


def dump_legacy(obj: Any, file, protocol: int) -> None:
    """Pickle ``obj`` to the binary ``file`` with :class:`LegacyNamesPickler`."""
    LegacyNamesPickler(file, protocol=protocol).dump(obj)
