"""A pickler that can name globals which do not exist in this Python process.

Some formats we must *write* refer to code we neither have nor want: DECA's
``landmark_embedding.npy`` holds torch tensors, pickled as calls to
``torch._utils._rebuild_tensor_v2``; a FLAME 2020 model names ``chumpy.ch.Ch``. Python's
pickler only writes a global after importing it and checking that the name leads back to the
same object, so it cannot write either without torch or chumpy installed.

:class:`NamedGlobalPickler` writes a :class:`GlobalRef` as a plain ``GLOBAL module name``
opcode, with no import and no check. It builds on the pure-Python ``pickle._Pickler`` (the
C pickler's ``save_global`` cannot be overridden); that class is private but has kept this
interface since Python 3.0, and only small files go through it.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, Optional


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
