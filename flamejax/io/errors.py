"""Errors of :mod:`flamejax.io`.

Users see one type, :class:`FlameFileError`: a file that cannot be read as what it claims to
be. :class:`UnsafePickleError` is raised inside the unpicklers and reaches users wrapped in a
FlameFileError by :func:`reading`, which is how every reader attaches the file's name.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


class FlameFileError(ValueError):
    """A file (or an in-memory object standing in for one) that is missing, corrupt, of an
    unknown format, unsafe to load, or whose contents are not what the format promises.

    The message always starts with the file's name, then says what is wrong, so that a
    user with a folder of FLAME assets knows which one to fix. ``path`` and ``problem`` hold
    the two parts.
    """

    def __init__(self, path: PathLike, problem: str):
        self.path = os.fspath(path) if not isinstance(path, str) else path
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TrackerOutputError(FlameFileError):
    """A face tracker's output (a file, or a folder of per-frame files) that is not what its
    format promises, or not recognisably any supported tracker's output.

    A :class:`FlameFileError` (so one ``except`` catches every bad file); ``path`` is the
    offending file or folder and ``problem`` names what is wrong (missing key, wrong shape or
    dtype, unknown layout).
    """


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global (a class or function) that is not on the loader's allow-list.

    Raised from ``find_class``, i.e. *before* anything named by the pickle is imported or
    called, which is what makes refusing it safe.
    """


@contextlib.contextmanager
def reading(path: PathLike, what: str) -> Iterator[None]:
    """Turn every failure while decoding ``path`` into one :class:`FlameFileError`.

    ``what`` names the format being read ("pickle", "npz archive", ...). Decoding untrusted
    bytes can fail in any layer (zip, npy header, pickle opcodes, numpy, our own checks), and
    the user needs the same thing from each: which file, and what is wrong with it. The
    original exception stays chained for debugging.
    """
    try:
        yield
    except FlameFileError:
        raise
    except FileNotFoundError:
        raise FlameFileError(path, "no such file") from None
    except PermissionError:
        raise FlameFileError(path, "permission denied") from None
    except IsADirectoryError:
        raise FlameFileError(path, f"is a directory, expected a {what} file") from None
    except UnsafePickleError as exc:
        raise FlameFileError(path, f"unsafe {what}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - see docstring: any decoding failure is a file problem
        detail = str(exc) or type(exc).__name__
        raise FlameFileError(path, f"not a readable {what} (corrupt or truncated?): "
                                   f"{type(exc).__name__}: {detail}") from exc
