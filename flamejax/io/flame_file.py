"""FLAME model files: read into :class:`~flamejax.flame.FlameModel`, and written back.

Supported: FLAME 2020 ``generic_model.pkl`` (and the male/female files), ``flame2023.pkl``,
"FLAME 2023 Open", and ``.npz`` archives with the same keys. All hold a dict:

=================  ==================  ============================================
key                shape               meaning
=================  ==================  ============================================
``v_template``     (V, 3)              mean head, metres
``f``              (F, 3) uint32       triangles
``shapedirs``      (V, 3, 300 + E)     300 identity components, then E expression
                                        components (E = 100 in FLAME 2020/2023)
``posedirs``       (V, 3, 36)          pose correctives per pose feature
``J_regressor``    (5, V)              joints from vertices (SciPy ``csc_matrix`` in
                                        the pickles; dense or sparse in ``.npz``)
``weights``        (V, 5)              skinning weights
``kintree_table``  (2, 5)              row 0 parents (root: 2**32 - 1), row 1 ids
``J``              (5, 3)              rest joints of the template (unused: recomputed)
``bs_style``       'lbs'               ``bs_type``: 'lrotmin' (unused)
=================  ==================  ============================================

FLAME 2020 pickles come from Python 2 and store several arrays as chumpy ``Ch`` objects;
:mod:`flamejax.io.safe_pickle` reads them without chumpy, scipy's pickle path or any code
from the file.

**The shape/expression split.** The files do not record it: FLAME's convention is that the
first 300 columns of ``shapedirs`` are identity and the rest expression. We assume exactly
that for every file with at least 300 columns, and refuse files with fewer. Models with fewer
components (synthetic or truncated ones) are saved zero-padded to FLAME's 300 + 100 layout,
so that every FLAME consumer (smplx, DECA, ...) reads them correctly, with the true counts in
two extra keys, ``flamejax_n_shape`` and ``flamejax_n_expr``, which other readers ignore
and which make ``save_flame`` -> ``load_flame`` an exact round trip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FLAME_PARENTS, N_JOINTS, N_POSE_FEATURES, FlameModel
from flamejax.io import checks
from flamejax.io.errors import FlameFileError, PathLike
from flamejax.io.landmark_files import (
    MediapipeEmbedding,
    check_embedding,
    load_landmark_embedding,
    load_mediapipe_embedding,
    with_mediapipe,
)
from flamejax.io.masks import check_masks, load_masks
from flamejax.io.npy import read_npz
from flamejax.io.pickle_writer import dump_legacy
from flamejax.io.safe_pickle import CscMatrixState, CsrMatrixState, load_pickle
from flamejax.landmarks import LandmarkEmbedding

REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
FILE_N_SHAPE = 300  # identity columns of shapedirs in every FLAME file
FILE_N_EXPR = 100  # expression columns in FLAME 2020 / 2023
N_SHAPE_KEY = "flamejax_n_shape"
N_EXPR_KEY = "flamejax_n_expr"
# SMPL-family files store the root's "no parent" as uint32 -1 in an integer table.
ROOT_PARENT = 2**32 - 1
PICKLE_PROTOCOL = 4  # Python 3.4+; see save_flame
PICKLE_SUFFIXES = (".pkl", ".pickle")

LandmarksArg = Union[PathLike, Sequence[PathLike], LandmarkEmbedding, None]
MediapipeArg = Union[PathLike, MediapipeEmbedding, LandmarkEmbedding, None]
MasksArg = Union[PathLike, Mapping[str, Any], None]


class FlameArrays(NamedTuple):
    """A FLAME file's model data in the file's own layout, validated, as NumPy arrays.

    v_template (V, 3) float64; shapedirs (V, 3, n_shape + n_expr) float64, padding columns
    removed; posedirs (V, 3, 36); j_regressor (5, V) dense; weights (V, 5); faces (F, 3)
    int64; n_shape: how many leading shapedirs columns are identity components.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    n_shape: int


# ----------------------------------------------------------------------------------------------
# Reading


def _read_dict(path: PathLike) -> dict:
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        data = load_pickle(path)
    elif suffix == ".npz":
        # np.savez of a dict holding Python objects (e.g. a sparse J_regressor) wraps each in a
        # 0-d object array; unwrap them so both containers look alike from here on.
        data = {k: (v[()] if v.dtype == object and v.shape == () else v)
                for k, v in read_npz(path).items()}
    elif not os.path.exists(path):
        raise FlameFileError(path, "no such file")
    else:
        raise FlameFileError(path, f"unknown FLAME model extension {suffix!r} (expected .pkl or .npz)")
    if not isinstance(data, dict):
        raise FlameFileError(path, f"expected a dict of model arrays, found a {type(data).__name__}")
    return data


def _sparse_parts(data: dict) -> None:
    """Assemble ``J_regressor`` from ``J_regressor_{data,indices,indptr,shape[,format]}`` keys."""
    parts = ("data", "indices", "indptr", "shape")
    if "J_regressor" in data or not all(f"J_regressor_{p}" in data for p in parts):
        return
    fmt = str(np.asarray(data.get("J_regressor_format", "csc")))
    matrix = {"csc": CscMatrixState, "csr": CsrMatrixState}.get(fmt)
    if matrix is None:
        return  # reported as a missing J_regressor
    state = {p: data[f"J_regressor_{p}"] for p in ("data", "indices", "indptr")}
    state["_shape"] = tuple(int(n) for n in np.asarray(data["J_regressor_shape"]).reshape(-1))
    data["J_regressor"] = matrix()
    data["J_regressor"].__setstate__(state)


def _count(data: dict, key: str, path: PathLike) -> Optional[int]:
    if key not in data:
        return None
    value = np.asarray(data[key])
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise FlameFileError(path, f"'{key}' must be a non-negative integer, got {data[key]!r}")
    return int(value)


def _component_columns(data: dict, n_columns: int, path: PathLike) -> tuple[np.ndarray, int]:
    """Which shapedirs columns are identity and expression components (see module docstring)."""
    n_shape, n_expr = _count(data, N_SHAPE_KEY, path), _count(data, N_EXPR_KEY, path)
    if n_columns < FILE_N_SHAPE:
        raise FlameFileError(path, f"'shapedirs' has {n_columns} components; FLAME files hold "
                                   f"{FILE_N_SHAPE} shape components followed by the expression ones")
    n_shape = FILE_N_SHAPE if n_shape is None else n_shape
    n_expr = n_columns - FILE_N_SHAPE if n_expr is None else n_expr
    if n_shape > FILE_N_SHAPE or FILE_N_SHAPE + n_expr > n_columns:
        raise FlameFileError(path, f"'{N_SHAPE_KEY}'={n_shape} / '{N_EXPR_KEY}'={n_expr} do not fit "
                                   f"a shapedirs with {n_columns} components")
    columns = np.concatenate([np.arange(n_shape), FILE_N_SHAPE + np.arange(n_expr)])
    return columns, n_shape


def _check_kintree(table: np.ndarray, path: PathLike) -> None:
    checks.shape(table, (2, N_JOINTS), "kintree_table", path)
    if table.dtype.kind not in "iu":
        raise FlameFileError(path, f"'kintree_table' has dtype {table.dtype}, expected integers")
    parents = [int(p) for p in table[0].astype(np.int64)]
    # The root's entry is a "no parent" sentinel: -1, or 2**32 - 1 as FLAME's files store it.
    root_ok = parents[0] < 0 or parents[0] >= N_JOINTS
    ids_ok = list(table[1]) == list(range(N_JOINTS))
    if not root_ok or not ids_ok or tuple(parents[1:]) != FLAME_PARENTS[1:]:
        raise FlameFileError(path, f"'kintree_table' is {table.tolist()}; FLAME's joint tree is parents "
                                   f"{list(FLAME_PARENTS)} (root, neck, jaw, left eye, right eye)")


def read_flame_arrays(path: PathLike) -> FlameArrays:
    """Read and validate a FLAME model file (see module docstring), without building a model."""
    data = _read_dict(path)
    _sparse_parts(data)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise FlameFileError(path, f"not a FLAME model: missing keys {missing} "
                                   f"(found {sorted(map(str, data))})")
    raw = {k: checks.array(data[k], k, path) for k in REQUIRED_KEYS}

    v_template = checks.shape(raw["v_template"], (None, 3), "v_template", path)
    v_template = checks.real(v_template, "v_template", path)
    n_verts = v_template.shape[0]
    hint = f" with V = {n_verts} vertices (from v_template)"

    def real(key, expected):
        return checks.real(checks.shape(raw[key], expected, key, path, hint), key, path)

    shapedirs = real("shapedirs", (n_verts, 3, None))
    posedirs = real("posedirs", (n_verts, 3, N_POSE_FEATURES))
    j_regressor = real("J_regressor", (N_JOINTS, n_verts))
    weights = real("weights", (n_verts, N_JOINTS))
    faces = checks.indices(checks.shape(raw["f"], (None, 3), "f", path), "f", path, n_verts, "vertices")
    _check_kintree(raw["kintree_table"], path)
    columns, n_shape = _component_columns(data, shapedirs.shape[2], path)
    return FlameArrays(v_template, shapedirs[:, :, columns], posedirs, j_regressor, weights, faces,
                       n_shape)


def _landmarks(value: LandmarksArg, n_faces: int, dtype: np.dtype) -> LandmarkEmbedding:
    if isinstance(value, LandmarkEmbedding):
        check_embedding(value, n_faces, "<landmarks argument>")
        # Face ids as int32, barycentric weights in the model's dtype, as a loaded file gives.
        def cast(x):
            return jnp.asarray(x, dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.int32)

        return jax.tree_util.tree_map(cast, value)
    paths = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return load_landmark_embedding(*paths, n_faces=n_faces, dtype=dtype)


def _mediapipe(value: MediapipeArg, n_faces: int) -> Union[MediapipeEmbedding, LandmarkEmbedding]:
    if isinstance(value, (str, os.PathLike)):
        return load_mediapipe_embedding(value, n_faces=n_faces)
    if isinstance(value, LandmarkEmbedding) and value.mediapipe_faces is None:
        raise ValueError("the mediapipe argument is a LandmarkEmbedding without MediaPipe points")
    return check_embedding(value, n_faces, "<mediapipe argument>")


def load_flame(path: PathLike, *, n_shape: Optional[int] = None, n_expr: Optional[int] = None,
               dtype=jnp.float32, landmarks: LandmarksArg = None, mediapipe: MediapipeArg = None,
               masks: MasksArg = None) -> FlameModel:
    """Load a FLAME model file (``.pkl`` or ``.npz``, see module docstring) as a FlameModel.

    n_shape, n_expr: keep only the first components (default: all the file has, 300 and 100
    for FLAME 2020/2023). dtype: float32 (default) or float64 (needs JAX x64 mode).
    landmarks: embedding file(s) for :func:`load_landmark_embedding` (e.g. DECA's
    ``landmark_embedding.npy``, or RingNet's static ``.pkl`` and dynamic ``.npy``), or a
    LandmarkEmbedding. mediapipe: ``mediapipe_landmark_embedding.npz`` (or an embedding),
    added to ``landmarks``, which it needs. masks: ``FLAME_masks.pkl`` or a dict region ->
    vertex ids. Face and vertex ids of all three are checked against the model.

    Raises FlameFileError (naming the file and the problem) for anything wrong with a file.
    """
    dt = checks.float_dtype(dtype)
    arrays = read_flame_arrays(path)
    n_expr_file = arrays.shapedirs.shape[2] - arrays.n_shape
    for name, n, have in (("n_shape", n_shape, arrays.n_shape), ("n_expr", n_expr, n_expr_file)):
        if n is not None and not 0 <= n <= have:
            raise ValueError(f"{name}={n} is outside [0, {have}] for {os.fspath(path)}")
    keep_shape = arrays.n_shape if n_shape is None else n_shape
    keep_expr = n_expr_file if n_expr is None else n_expr
    columns = np.concatenate([np.arange(keep_shape), arrays.n_shape + np.arange(keep_expr)])

    def components(a):  # (V, 3, K) file layout -> (K, V, 3) model layout
        return jnp.asarray(np.ascontiguousarray(np.transpose(a, (2, 0, 1)), dtype=dt))

    n_faces, n_verts = arrays.faces.shape[0], arrays.v_template.shape[0]
    embedding = None if landmarks is None else _landmarks(landmarks, n_faces, dt)
    if mediapipe is not None:
        if embedding is None:
            raise ValueError("mediapipe landmarks are added to a landmark embedding: pass landmarks too")
        embedding = with_mediapipe(embedding, _mediapipe(mediapipe, n_faces))
    if masks is None:
        mask_dict = {}
    elif isinstance(masks, Mapping):
        mask_dict = {k: jnp.asarray(v, jnp.int32)
                     for k, v in check_masks(masks, "<masks argument>", n_verts).items()}
    else:
        mask_dict = load_masks(masks, n_vertices=n_verts)

    return FlameModel(
        v_template=jnp.asarray(arrays.v_template.astype(dt)),
        shapedirs=components(arrays.shapedirs[:, :, columns]),
        posedirs=components(arrays.posedirs),
        j_regressor=jnp.asarray(arrays.j_regressor.astype(dt)),
        weights=jnp.asarray(arrays.weights.astype(dt)),
        faces=jnp.asarray(arrays.faces, jnp.int32),
        landmarks=embedding,
        masks=mask_dict,
        n_shape=keep_shape,
    )


# ----------------------------------------------------------------------------------------------
# Writing


def flame_file_dict(model: FlameModel) -> dict[str, Any]:
    """The model as a FLAME file's dict (NumPy; dense ``J_regressor``), padded to 300 + 100."""
    if tuple(model.parents) != FLAME_PARENTS:
        raise ValueError(f"FLAME files hold the joint tree {FLAME_PARENTS}; model has {model.parents}")
    n_shape, n_expr = model.n_shape, model.n_expr
    if n_shape > FILE_N_SHAPE:
        raise ValueError(f"FLAME files hold at most {FILE_N_SHAPE} shape components; "
                         f"model has {n_shape}")
    components = np.asarray(model.shapedirs, np.float64)  # (S + E, V, 3)
    n_verts = components.shape[1]
    padded = np.zeros((FILE_N_SHAPE + max(n_expr, FILE_N_EXPR), n_verts, 3))
    padded[:n_shape] = components[:n_shape]
    padded[FILE_N_SHAPE:FILE_N_SHAPE + n_expr] = components[n_shape:]
    v_template = np.asarray(model.v_template, np.float64)
    j_regressor = np.asarray(model.j_regressor, np.float64)
    kintree = np.array([[ROOT_PARENT, *FLAME_PARENTS[1:]], list(range(N_JOINTS))], np.int64)
    data = {
        "v_template": v_template,
        "f": np.asarray(model.faces).astype(np.uint32),
        "shapedirs": np.ascontiguousarray(np.transpose(padded, (1, 2, 0))),
        "posedirs": np.ascontiguousarray(np.transpose(np.asarray(model.posedirs, np.float64),
                                                      (1, 2, 0))),
        "J_regressor": j_regressor,
        "weights": np.asarray(model.weights, np.float64),
        "kintree_table": kintree,
        "J": j_regressor @ v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    if n_shape != FILE_N_SHAPE:
        data[N_SHAPE_KEY] = n_shape
    if n_expr < FILE_N_EXPR:
        data[N_EXPR_KEY] = n_expr
    return data


def save_flame(model: FlameModel, path: PathLike) -> None:
    """Write ``model`` as a FLAME model file: ``.pkl`` (FLAME's pickle layout, ``J_regressor``
    a SciPy ``csc_matrix``, plain NumPy arrays, no chumpy) or ``.npz`` (dense ``J_regressor``).

    Both load with ``smplx.FLAME`` and with :func:`load_flame`; the round trip is exact
    (float32 models are stored as float64). Landmarks and masks are separate files: see
    :func:`save_deca_embedding` / :func:`save_ringnet_embedding` and :func:`save_masks`.

    The ``.pkl`` names NumPy and SciPy as old versions do (``numpy.core.multiarray``, as
    FLAME 2020's own file, and the public ``scipy.sparse.csc_matrix``; see
    :class:`~flamejax.io.pickle_writer.LegacyNamesPickler`), so it also loads where FLAME
    trackers pin NumPy < 1.26 or SciPy < 1.8, which cannot import NumPy 2's ``numpy._core``.
    It is pickle protocol 4 (Python 3.4+), not 2: protocol 2 would only help Python 2 readers,
    and the FLAME consumers that matter (smplx, DECA, EMOCA, ...) are Python 3, while Python 3
    writes ``bytes`` at protocol 2 as ``_codecs.encode`` of text, which inflates array data
    (every byte >= 0x80 takes two).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in PICKLE_SUFFIXES + (".npz",):
        raise ValueError(f"{os.fspath(path)}: unknown FLAME model extension {suffix!r} "
                         "(use .pkl or .npz)")
    data = flame_file_dict(model)
    with open(path, "wb") as fh:
        if suffix == ".npz":
            np.savez(fh, **data)
        else:
            import scipy.sparse  # only needed to write FLAME's own J_regressor type

            data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
            dump_legacy(data, fh, protocol=PICKLE_PROTOCOL)
