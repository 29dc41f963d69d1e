"""Landmark embedding files: which mesh face, and where on it, each landmark sits.

Three families of files, all read into :class:`~flamejax.landmarks.LandmarkEmbedding`
(face ids index the model's faces; barycentric rows sum to 1):

- DECA / EMOCA / SMIRK / metrical-tracker ``landmark_embedding.npy``: ``np.save`` of a dict
  with ``static_lmk_faces_idx`` (51,) and ``static_lmk_bary_coords`` (51, 3) as NumPy arrays,
  ``dynamic_lmk_faces_idx`` (79, 17) int64 and ``dynamic_lmk_bary_coords`` (79, 17, 3) float32
  as *torch tensors*, and ``full_lmk_faces_idx`` (1, 68) / ``full_lmk_bary_coords`` (1, 68, 3)
  NumPy arrays (a fixed 68-point set for 3D landmarks; we do not use it).
- RingNet / smplx: ``flame_static_embedding.pkl`` (Python 2 pickle of a dict with
  ``lmk_face_idx`` (51,) and ``lmk_b_coords`` (51, 3)) plus ``flame_dynamic_embedding.npy``
  (``np.save`` of a dict with ``lmk_face_idx`` (79, 17) and ``lmk_b_coords`` (79, 17, 3)).
- metrical-tracker ``mediapipe_landmark_embedding.npz``: ``lmk_face_idx`` (105,),
  ``lmk_b_coords`` (105, 3) and ``landmark_indices`` (105,), the MediaPipe face-mesh vertex
  that each point corresponds to (kept in :class:`MediapipeEmbedding`).

The dynamic tables hold one 17-point jaw contour per head-yaw bin (79 bins, see
:func:`flamejax.landmarks.yaw_bin`). Which file is which is decided by content (its keys),
so :func:`load_landmark_embedding` takes any combination that adds up to static + dynamic
(+ MediaPipe).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import jax.numpy as jnp
import numpy as np

from flamejax.io import checks
from flamejax.io.pickle_writer import dump_legacy
from flamejax.io.errors import FlameFileError, PathLike
from flamejax.io.npy import read_npy_object, read_npz, write_npy_object
from flamejax.io.safe_pickle import load_pickle
from flamejax.io.torch_pickle import TensorForPickle
from flamejax.landmarks import N_CONTOUR, N_MEDIAPIPE, N_STATIC, N_YAW_BINS, LandmarkEmbedding

# Protocol of the pickles we write: Python 3.4+ readers, compact for large arrays.
PICKLE_PROTOCOL = 4

DECA_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords",
             "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")


class MediapipeEmbedding(NamedTuple):
    """The 105 MediaPipe landmarks of metrical-tracker's embedding (NumPy arrays).

    faces (105,) int64 face ids; bary (105, 3) float64; landmark_indices (105,) int64: the
    MediaPipe face-mesh vertex that each point stands for (used to pick detections).
    """

    faces: np.ndarray
    bary: np.ndarray
    landmark_indices: np.ndarray


@dataclasses.dataclass
class _Parts:
    """What one or more embedding files provided, as validated NumPy arrays."""

    static: Optional[tuple[np.ndarray, np.ndarray]] = None
    dynamic: Optional[tuple[np.ndarray, np.ndarray]] = None
    mediapipe: Optional[MediapipeEmbedding] = None

    def merge(self, other: "_Parts", path: PathLike) -> None:
        for field in ("static", "dynamic", "mediapipe"):
            value = getattr(other, field)
            if value is None:
                continue
            if getattr(self, field) is not None:
                raise FlameFileError(path, f"provides {field} landmarks, which an earlier file "
                                           "already provided")
            setattr(self, field, value)


# ----------------------------------------------------------------------------------------------
# Reading


def _read_dict(path: PathLike) -> dict:
    """The dict stored in an embedding file, by extension: .npy (np.save), .pkl, .npz."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        data = read_npy_object(path)
    elif suffix in (".pkl", ".pickle"):
        data = load_pickle(path)
    elif suffix == ".npz":
        data = read_npz(path)
    else:
        if not os.path.exists(path):
            raise FlameFileError(path, "no such file")
        raise FlameFileError(path, f"unknown landmark embedding extension {suffix!r} "
                                   "(expected .npy, .pkl or .npz)")
    if not isinstance(data, dict):
        raise FlameFileError(path, f"expected a dict of arrays, found a {type(data).__name__}")
    return data


def _faces_and_bary(data: dict, face_key: str, bary_key: str, n: tuple[int, ...],
                    path: PathLike, n_faces: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    faces = checks.array(data[face_key], face_key, path)
    bary = checks.array(data[bary_key], bary_key, path)
    checks.shape(faces, n, face_key, path)
    checks.shape(bary, n + (3,), bary_key, path)
    return (checks.indices(faces, face_key, path, n_faces, "faces"),
            checks.barycentric(bary, bary_key, path))


def _parse(data: dict, path: PathLike, n_faces: Optional[int]) -> _Parts:
    """Recognise an embedding dict by its keys and validate it."""
    keys = set(data)
    if set(DECA_KEYS) <= keys:
        return _Parts(
            static=_faces_and_bary(data, "static_lmk_faces_idx", "static_lmk_bary_coords",
                                   (N_STATIC,), path, n_faces),
            dynamic=_faces_and_bary(data, "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
                                    (N_YAW_BINS, N_CONTOUR), path, n_faces))
    if {"lmk_face_idx", "lmk_b_coords", "landmark_indices"} <= keys:
        faces, bary = _faces_and_bary(data, "lmk_face_idx", "lmk_b_coords", (N_MEDIAPIPE,),
                                      path, n_faces)
        indices = checks.array(data["landmark_indices"], "landmark_indices", path)
        checks.shape(indices, (N_MEDIAPIPE,), "landmark_indices", path)
        return _Parts(mediapipe=MediapipeEmbedding(
            faces, bary, checks.indices(indices, "landmark_indices", path)))
    if {"lmk_face_idx", "lmk_b_coords"} <= keys:
        ndim = np.ndim(checks.array(data["lmk_face_idx"], "lmk_face_idx", path))
        if ndim == 1:
            return _Parts(static=_faces_and_bary(data, "lmk_face_idx", "lmk_b_coords",
                                                 (N_STATIC,), path, n_faces))
        return _Parts(dynamic=_faces_and_bary(data, "lmk_face_idx", "lmk_b_coords",
                                              (N_YAW_BINS, N_CONTOUR), path, n_faces))
    raise FlameFileError(path, f"not a FLAME landmark embedding (keys: {sorted(map(str, keys))})")


def _embedding(parts: _Parts, dtype, source: PathLike) -> LandmarkEmbedding:
    missing = [name for name in ("static", "dynamic") if getattr(parts, name) is None]
    if missing:
        raise FlameFileError(source, f"no {' and no '.join(missing)} landmarks: a landmark "
                                     "embedding needs both (e.g. RingNet's static .pkl *and* "
                                     "dynamic .npy)")
    dt = checks.float_dtype(dtype)
    mp = parts.mediapipe
    return LandmarkEmbedding(
        static_faces=jnp.asarray(parts.static[0], jnp.int32),
        static_bary=jnp.asarray(parts.static[1].astype(dt)),
        dynamic_faces=jnp.asarray(parts.dynamic[0], jnp.int32),
        dynamic_bary=jnp.asarray(parts.dynamic[1].astype(dt)),
        mediapipe_faces=None if mp is None else jnp.asarray(mp.faces, jnp.int32),
        mediapipe_bary=None if mp is None else jnp.asarray(mp.bary.astype(dt)),
    )


def load_landmark_embedding(*paths: PathLike, n_faces: Optional[int] = None,
                            dtype=jnp.float32) -> LandmarkEmbedding:
    """Read and merge landmark embedding files of any of the supported formats.

    ``paths``: e.g. ``("landmark_embedding.npy",)`` (DECA family), or
    ``("flame_static_embedding.pkl", "flame_dynamic_embedding.npy")`` (RingNet), optionally
    plus ``"mediapipe_landmark_embedding.npz"``. Each file is recognised by its keys; together
    they must provide static and dynamic landmarks exactly once. ``n_faces``: the model's
    face count, to check face ids against. Barycentric weights come back in ``dtype``.
    """
    if not paths:
        raise TypeError("load_landmark_embedding needs at least one file")
    parts = _Parts()
    for path in paths:
        parts.merge(_parse(_read_dict(path), path, n_faces), path)
    return _embedding(parts, dtype, ", ".join(os.fspath(p) for p in paths))


def load_deca_embedding(path: PathLike, *, n_faces: Optional[int] = None,
                        dtype=jnp.float32) -> LandmarkEmbedding:
    """Read a DECA/EMOCA/SMIRK ``landmark_embedding.npy`` (torch tensors read without torch)."""
    data = _read_dict(path)
    missing = [k for k in DECA_KEYS if k not in data]
    if missing:
        raise FlameFileError(path, f"not a DECA landmark embedding: missing {missing}")
    return _embedding(_parse(data, path, n_faces), dtype, path)


def load_ringnet_embedding(static_path: PathLike, dynamic_path: PathLike, *,
                           n_faces: Optional[int] = None, dtype=jnp.float32) -> LandmarkEmbedding:
    """Read RingNet's ``flame_static_embedding.pkl`` + ``flame_dynamic_embedding.npy`` pair."""
    static = _parse(_read_dict(static_path), static_path, n_faces)
    dynamic = _parse(_read_dict(dynamic_path), dynamic_path, n_faces)
    if static.static is None:
        raise FlameFileError(static_path, "holds no static (51-point) landmark embedding")
    if dynamic.dynamic is None:
        raise FlameFileError(dynamic_path, "holds no dynamic (79 x 17 contour) landmark embedding")
    return _embedding(_Parts(static=static.static, dynamic=dynamic.dynamic), dtype, static_path)


def load_mediapipe_embedding(path: PathLike, *, n_faces: Optional[int] = None) -> MediapipeEmbedding:
    """Read metrical-tracker's ``mediapipe_landmark_embedding.npz``."""
    parts = _parse(_read_dict(path), path, n_faces)
    if parts.mediapipe is None:
        raise FlameFileError(path, "not a MediaPipe landmark embedding (needs lmk_face_idx, "
                                   "lmk_b_coords and landmark_indices)")
    return parts.mediapipe


def with_mediapipe(embedding: LandmarkEmbedding,
                   mediapipe: Union[MediapipeEmbedding, LandmarkEmbedding]) -> LandmarkEmbedding:
    """``embedding`` with the 105 MediaPipe points of ``mediapipe`` (replacing any it had)."""
    if isinstance(mediapipe, LandmarkEmbedding):
        if mediapipe.mediapipe_faces is None:
            raise ValueError("the MediaPipe source is a LandmarkEmbedding without MediaPipe points")
        faces, bary = mediapipe.mediapipe_faces, mediapipe.mediapipe_bary
    else:
        faces, bary = mediapipe.faces, mediapipe.bary
    return dataclasses.replace(
        embedding, mediapipe_faces=jnp.asarray(np.asarray(faces), jnp.int32),
        mediapipe_bary=jnp.asarray(np.asarray(bary), embedding.static_bary.dtype))


_EMBEDDING_TABLES = (("static_faces", "static_bary", (N_STATIC,)),
                     ("dynamic_faces", "dynamic_bary", (N_YAW_BINS, N_CONTOUR)),
                     ("mediapipe_faces", "mediapipe_bary", (N_MEDIAPIPE,)))


def check_embedding(embedding: Union[LandmarkEmbedding, MediapipeEmbedding], n_faces: Optional[int],
                    source: PathLike = "<landmark embedding>"):
    """Validate an in-memory embedding like a file's (shapes, id ranges, barycentric sums).

    Returns it unchanged; raises FlameFileError naming ``source`` and the offending field.
    """
    if isinstance(embedding, MediapipeEmbedding):
        data = {"lmk_face_idx": np.asarray(embedding.faces), "lmk_b_coords": np.asarray(embedding.bary),
                "landmark_indices": np.asarray(embedding.landmark_indices)}
        _parse(data, source, n_faces)
        return embedding
    if not isinstance(embedding, LandmarkEmbedding):
        raise FlameFileError(source, f"expected a LandmarkEmbedding, got {type(embedding).__name__}")
    for faces, bary, n in _EMBEDDING_TABLES:
        present = (getattr(embedding, faces) is not None, getattr(embedding, bary) is not None)
        if present == (False, False) and faces.startswith("mediapipe"):
            continue
        if present != (True, True):
            raise FlameFileError(source, f"'{faces}' and '{bary}' must both be set")
        data = {faces: np.asarray(getattr(embedding, faces)), bary: np.asarray(getattr(embedding, bary))}
        _faces_and_bary(data, faces, bary, n, source, n_faces)
    return embedding


# ----------------------------------------------------------------------------------------------
# Writing (same keys and dtypes as the originals)


def _numpy_parts(embedding: LandmarkEmbedding):
    return (np.asarray(embedding.static_faces, np.int64), np.asarray(embedding.static_bary, np.float64),
            np.asarray(embedding.dynamic_faces, np.int64), np.asarray(embedding.dynamic_bary))


def save_deca_embedding(embedding: LandmarkEmbedding, path: PathLike) -> None:
    """Write ``embedding`` as DECA's ``landmark_embedding.npy`` (dynamic tables as torch tensors).

    The dynamic tables are written as torch tensors (int64 ids, float32 weights, as in DECA's
    file) without needing torch; float64 dynamic weights therefore lose precision. The
    ``full_lmk_*`` tables, which we do not read, are the frontal (yaw bin 0) contour followed
    by the static points, in iBUG-68 order.
    """
    static_faces, static_bary, dynamic_faces, dynamic_bary = _numpy_parts(embedding)
    data = {
        "static_lmk_faces_idx": static_faces,
        "static_lmk_bary_coords": static_bary,
        "dynamic_lmk_faces_idx": TensorForPickle(dynamic_faces),
        "dynamic_lmk_bary_coords": TensorForPickle(dynamic_bary.astype(np.float32)),
        "full_lmk_faces_idx": np.concatenate([dynamic_faces[0], static_faces])[None],
        "full_lmk_bary_coords": np.concatenate([dynamic_bary[0].astype(np.float64), static_bary])[None],
    }
    write_npy_object(path, data)


def save_ringnet_embedding(embedding: LandmarkEmbedding, static_path: PathLike,
                           dynamic_path: PathLike) -> None:
    """Write ``embedding`` as RingNet's static ``.pkl`` and dynamic ``.npy`` pair."""
    static_faces, static_bary, dynamic_faces, dynamic_bary = _numpy_parts(embedding)
    with open(static_path, "wb") as fh:
        dump_legacy({"lmk_face_idx": static_faces, "lmk_b_coords": static_bary}, fh, PICKLE_PROTOCOL)
    write_npy_object(dynamic_path, {"lmk_face_idx": dynamic_faces,
                                    "lmk_b_coords": dynamic_bary.astype(np.float64)})


def save_mediapipe_embedding(mediapipe: Union[MediapipeEmbedding, LandmarkEmbedding], path: PathLike,
                             landmark_indices: Optional[Any] = None) -> None:
    """Write metrical-tracker's ``mediapipe_landmark_embedding.npz``.

    ``mediapipe``: a :class:`MediapipeEmbedding`, or a LandmarkEmbedding with MediaPipe
    points plus ``landmark_indices`` (105,), their MediaPipe face-mesh vertex ids.
    """
    if isinstance(mediapipe, LandmarkEmbedding):
        if mediapipe.mediapipe_faces is None or landmark_indices is None:
            raise ValueError("need an embedding with MediaPipe points and their landmark_indices")
        mediapipe = MediapipeEmbedding(np.asarray(mediapipe.mediapipe_faces),
                                       np.asarray(mediapipe.mediapipe_bary),
                                       np.asarray(landmark_indices))
    with open(path, "wb") as fh:
        np.savez(fh, lmk_face_idx=np.asarray(mediapipe.faces, np.int64),
                 lmk_b_coords=np.asarray(mediapipe.bary, np.float64),
                 landmark_indices=np.asarray(mediapipe.landmark_indices, np.int64))
