"""The data folder of the face-calibration method's PyTorch code (Omens et al., CGF 2026).

Layout (read and written exactly; other files in the folder are ignored)::

    <folder>/controls_simple.txt                         K control names, one per line
    <folder>/semantic_to_flame_deltas_basis.npy          float32 (103, K)  B
    <folder>/identities/<name>/global_expression.npy     float32 (103,)    g
    <folder>/identities/<name>/<name>_identity.npy       float32 (300,)    FLAME shape beta
    <folder>/masks/<i>.npy                               int32 (n_i,)      vertex ids, i = 0..E-1

FLAME parameters are theta(c) = B @ c + g; the 103 rows are the 100 FLAME expression
coefficients then the jaw rotation as Euler angles x, y, z (radians). Mask i holds the
FLAME-2020 vertex ids moved by Simon-Says expression i. The folder may also hold
``condensation.npy`` and ``semantic_to_flame_basis.npy``; the method does not need them and
they are neither read nor written.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple, Optional

import numpy as np

from flamejax.io import checks
from flamejax.io.errors import FlameFileError, PathLike, reading
from flamejax.io.npy import read_npy

CONTROLS_FILE = "controls_simple.txt"
BASIS_FILE = "semantic_to_flame_deltas_basis.npy"
IDENTITIES_DIR = "identities"
GLOBAL_EXPRESSION_FILE = "global_expression.npy"
MASKS_DIR = "masks"
# Rows of B and g: 100 FLAME expression coefficients, then jaw Euler x, y, z.
N_PARAMS = 103
# Upper bound on shape coefficients (FLAME 2020 has 300); the reference files hold 300.
MAX_SHAPE = 300
# Masks are FLAME-2020 vertex ids.
FLAME_VERTICES = 5023

_MASK_NAME = re.compile(r"^(\d+)\.npy$")


class FaceCalibrationData(NamedTuple):
    """The contents of a face-calibration data folder for one identity.

    Attributes:
      control_names: (K,) control names; name k is column k of ``basis``.
      basis: (103, K) float32 B, semantic controls -> FLAME expression + jaw Euler deltas.
      global_expression: (103,) float32 g, the identity's offset in the same space.
      identity: (n_shape,) float32 FLAME shape coefficients beta (300 in the reference data).
      masks: (E,) int32 vertex-id arrays; mask i belongs to Simon-Says expression i.
      identity_name: the identity's folder name under ``identities/`` (e.g. "identity1").
    """

    control_names: tuple[str, ...]
    basis: np.ndarray
    global_expression: np.ndarray
    identity: np.ndarray
    masks: tuple[np.ndarray, ...]
    identity_name: str


def identity_file(name: str) -> str:
    """File name of identity ``name``'s shape coefficients (``<name>_identity.npy``)."""
    return f"{name}_identity.npy"


def _float_array(arr: np.ndarray, expected, name: str, path: PathLike) -> np.ndarray:
    """``arr`` checked for shape and finiteness, as float32 (the format's dtype)."""
    checks.shape(arr, expected, name, path)
    return checks.real(arr, name, path).astype(np.float32)


def _check_identity_name(name: str, source: PathLike) -> str:
    """An identity name must be a single, ordinary folder name (it becomes a path)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
            or os.sep in name:
        raise FlameFileError(source, f"identity name {name!r} is not a plain folder name")
    return name


def _read_control_names(path: str) -> tuple[str, ...]:
    """Names of ``controls_simple.txt``: one per line, blank lines skipped, no duplicates."""
    with reading(path, "text file"), open(path, encoding="utf-8") as fh:
        names = tuple(line.strip() for line in fh if line.strip())
    if not names:
        raise FlameFileError(path, "holds no control names")
    return _check_control_names(names, path)


def _check_control_names(names, source: PathLike) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if not isinstance(n, str) or not n or any(c.isspace() for c in n)]
    if bad:
        raise FlameFileError(source, f"control names must be non-empty and without spaces: "
                                     f"{bad[:3]}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FlameFileError(source, f"duplicate control names: {', '.join(duplicates)}")
    return names


def _choose_identity(folder: str, identity: Optional[str]) -> str:
    """The identity to read: ``identity``, or the only one in ``identities/``."""
    root = os.path.join(folder, IDENTITIES_DIR)
    if not os.path.isdir(root):
        raise FlameFileError(root, "no such folder (expected identities/<name>/)")
    available = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if identity is not None:
        _check_identity_name(identity, root)
        if identity not in available:
            listed = ", ".join(available) or "none"
            raise FlameFileError(os.path.join(root, identity),
                                 f"no such identity folder; available: {listed}")
        return identity
    if len(available) != 1:
        raise FlameFileError(root, f"holds {len(available)} identities "
                                   f"({', '.join(available) or 'none'}); pass identity=<name>")
    return available[0]


def _mask_files(masks_dir: str) -> list[str]:
    """``masks/0.npy .. masks/<E-1>.npy`` in order; a gap in the numbering is an error."""
    if not os.path.isdir(masks_dir):
        raise FlameFileError(masks_dir, "no such folder (expected masks/<i>.npy)")
    numbers = sorted(int(m.group(1)) for f in os.listdir(masks_dir)
                     if (m := _MASK_NAME.match(f)))
    if not numbers:
        raise FlameFileError(masks_dir, "holds no <i>.npy mask files")
    for expected, found in enumerate(numbers):
        if expected != found:
            raise FlameFileError(os.path.join(masks_dir, f"{expected}.npy"),
                                 "no such file (mask files must be numbered 0..E-1 without gaps)")
    return [os.path.join(masks_dir, f"{i}.npy") for i in numbers]


def _check_mask(arr: np.ndarray, path: PathLike, n_vertices: Optional[int]) -> np.ndarray:
    checks.shape(arr, (None,), "mask", path)
    return checks.indices(arr, "mask", path, n_vertices, "vertices").astype(np.int32)


def read_face_calibration(folder: PathLike, identity: Optional[str] = None, *,
                          n_vertices: Optional[int] = FLAME_VERTICES) -> FaceCalibrationData:
    """Read a face-calibration data folder (see the module docstring for the layout).

    Args:
      folder: the data folder.
      identity: the folder name under ``identities/``; None: the only one there.
      n_vertices: mask ids must be below this (FLAME 2020: 5023); None skips the check.

    Returns:
      :class:`FaceCalibrationData` with float32 B (103, K), g (103,), beta (n_shape,) and
      int32 masks. Every problem raises :class:`FlameFileError` naming the offending file:
      a missing file, a wrong shape, K names for a basis with another number of columns,
      NaN or infinite values, out-of-range mask ids.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FlameFileError(folder, "no such face-calibration data folder")
    names_path = os.path.join(folder, CONTROLS_FILE)
    names = _read_control_names(names_path)

    basis_path = os.path.join(folder, BASIS_FILE)
    basis = read_npy(basis_path)
    checks.shape(basis, (N_PARAMS, None), "basis", basis_path,
                 " (100 expression coefficients + 3 jaw angles, by K controls)")
    if basis.shape[1] != len(names):
        raise FlameFileError(basis_path, f"has {basis.shape[1]} columns but {CONTROLS_FILE} "
                                         f"names {len(names)} controls")
    basis = _float_array(basis, (N_PARAMS, len(names)), "basis", basis_path)

    name = _choose_identity(folder, identity)
    identity_dir = os.path.join(folder, IDENTITIES_DIR, name)
    g_path = os.path.join(identity_dir, GLOBAL_EXPRESSION_FILE)
    g = _float_array(read_npy(g_path), (N_PARAMS,), "global expression", g_path)
    beta_path = os.path.join(identity_dir, identity_file(name))
    beta = read_npy(beta_path)
    checks.shape(beta, (None,), "identity", beta_path)
    if not 1 <= beta.shape[0] <= MAX_SHAPE:
        raise FlameFileError(beta_path, f"has {beta.shape[0]} shape coefficients, expected "
                                        f"1..{MAX_SHAPE}")
    beta = _float_array(beta, (None,), "identity", beta_path)

    masks = tuple(_check_mask(read_npy(p), p, n_vertices)
                  for p in _mask_files(os.path.join(folder, MASKS_DIR)))
    return FaceCalibrationData(names, basis, g, beta, masks, name)


def check_face_calibration(data: FaceCalibrationData, source: PathLike = "<data>", *,
                           n_vertices: Optional[int] = FLAME_VERTICES) -> FaceCalibrationData:
    """Validate in-memory data against the format; returns it with the format's dtypes."""
    names = _check_control_names(data.control_names, source)
    name = _check_identity_name(data.identity_name, source)
    basis = _float_array(np.asarray(data.basis), (N_PARAMS, len(names)), "basis", source)
    g = _float_array(np.asarray(data.global_expression), (N_PARAMS,), "global expression", source)
    beta = _float_array(np.asarray(data.identity), (None,), "identity", source)
    if not 1 <= beta.shape[0] <= MAX_SHAPE:
        raise FlameFileError(source, f"'identity' has {beta.shape[0]} shape coefficients, "
                                     f"expected 1..{MAX_SHAPE}")
    if not data.masks:
        raise FlameFileError(source, "no masks (one per Simon-Says expression is needed)")
    masks = tuple(_check_mask(np.asarray(m), source, n_vertices) for m in data.masks)
    return FaceCalibrationData(names, basis, g, beta, masks, name)


def write_face_calibration(folder: PathLike, data: FaceCalibrationData) -> None:
    """Write ``data`` as a face-calibration data folder (float32 arrays, int32 masks).

    Creates the folder if needed and overwrites the files of the layout. Refuses (with a
    FlameFileError) a ``masks/`` folder that already holds more numbered masks than ``data``,
    since reading the folder back would then return the stale ones too.
    """
    folder = os.fspath(folder)
    data = check_face_calibration(data, folder, n_vertices=None)
    masks_dir = os.path.join(folder, MASKS_DIR)
    if os.path.isdir(masks_dir):
        stale = sorted(f for f in os.listdir(masks_dir)
                       if (m := _MASK_NAME.match(f)) and int(m.group(1)) >= len(data.masks))
        if stale:
            raise FlameFileError(masks_dir, f"already holds masks beyond the {len(data.masks)} "
                                            f"being written ({', '.join(stale[:3])}); write to an "
                                            f"empty folder")
    identity_dir = os.path.join(folder, IDENTITIES_DIR, data.identity_name)
    os.makedirs(identity_dir, exist_ok=True)
    os.makedirs(masks_dir, exist_ok=True)

    with open(os.path.join(folder, CONTROLS_FILE), "w", encoding="utf-8") as fh:
        fh.write("".join(f"{n}\n" for n in data.control_names))
    np.save(os.path.join(folder, BASIS_FILE), data.basis, allow_pickle=False)
    np.save(os.path.join(identity_dir, GLOBAL_EXPRESSION_FILE), data.global_expression,
            allow_pickle=False)
    np.save(os.path.join(identity_dir, identity_file(data.identity_name)), data.identity,
            allow_pickle=False)
    for i, mask in enumerate(data.masks):
        np.save(os.path.join(masks_dir, f"{i}.npy"), mask, allow_pickle=False)
