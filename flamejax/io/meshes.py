"""Mesh sequences as one OBJ or PLY file per frame, and single meshes read back, via trimesh.

:func:`write_mesh_sequence` writes ``<folder>/<stem>_<frame:05d>.obj`` (or ``.ply``) for each
frame of a (T, V, 3) vertex array in metres; :func:`read_mesh` reads one such file (or any
OBJ/PLY triangle mesh) as (vertices, faces). Vertex order is the point of a FLAME mesh (vertex
i is FLAME's vertex i, which landmark embeddings, masks and the tracker's correspondences rely
on), so trimesh is never allowed to merge, drop or reorder vertices: meshes are built with
``process=False`` and OBJ files are read with ``maintain_order=True`` (without it trimesh drops
unreferenced vertices and splits vertices along texture seams).

OBJ files hold the vertex positions with 9 decimals (nanometres) and 1-based faces, no normals,
colours or texture coordinates; PLY files are binary little-endian with float64 positions (the
float32 vertices of a FLAME forward pass round-trip exactly). Each file is written to a
temporary name and renamed into place, so a crashed run never leaves a half-written mesh under
a frame's name. Every problem with a file read is a :class:`~flamejax.io.errors.FlameFileError`
naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from flamejax.io.errors import FlameFileError, PathLike, reading

FORMATS = ("obj", "ply")
# Decimals of an OBJ vertex coordinate in metres: 1 nm, below float32's resolution at head scale.
OBJ_DIGITS = 9
# FLAME's vertex count, and what some trackers' meshes carry on top of it (for the hint).
FLAME_VERTICES = 5023
VHAP_TEETH_VERTICES = 120


def _mesh_bytes(vertices: np.ndarray, faces: np.ndarray, fmt: str) -> bytes:
    """One mesh encoded as an OBJ or binary PLY file's bytes."""
    import trimesh
    from trimesh.exchange.obj import export_obj
    from trimesh.exchange.ply import export_ply

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if fmt == "obj":
        text = export_obj(mesh, include_normals=False, include_color=False, include_texture=False,
                          digits=OBJ_DIGITS, header="flamejax mesh, metres")
        return text.encode("utf-8")
    return export_ply(mesh, encoding="binary", vertex_normal=False, include_attributes=False)


def write_mesh_sequence(folder: PathLike, vertices, faces, frame_ids=None, format: str = "obj",
                        stem: str = "frame") -> list[Path]:
    """Write one mesh file per frame -> the paths, in frame order.

    folder: created if missing; vertices: (T, V, 3) metres (finite); faces: (F, 3) vertex ids in
    [0, V); frame_ids: (T,) non-negative unique integers naming the files (default 0..T-1):
    ``<stem>_<frame:05d>.<format>``; format: "obj" or "ply".
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    vertices = np.asarray(vertices, np.float64)
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (T, V, 3), got {vertices.shape}")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices hold NaN or infinite values")
    t, v = vertices.shape[:2]
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.dtype.kind not in "iu"):
        raise ValueError(f"faces must be (F, 3) integer vertex ids, got {faces.dtype} {faces.shape}")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise ValueError(f"faces index vertices outside [0, {v})")
    frames = np.arange(t) if frame_ids is None else np.asarray(frame_ids)
    if frames.shape != (t,) or (t and frames.dtype.kind not in "iu"):
        raise ValueError(f"frame_ids must be ({t},) integers, got {frames.dtype} {frames.shape}")
    if t and (frames.min() < 0 or len(np.unique(frames)) != t):
        raise ValueError("frame_ids must be unique and non-negative (they name the files)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, verts in zip(frames, vertices):
        path = folder / f"{stem}_{int(frame):05d}.{format}"
        tmp = folder / f".{path.name}.tmp"
        try:
            tmp.write_bytes(_mesh_bytes(verts, faces, format))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        paths.append(path)
    return paths


def _vertex_count_hint(found: int, expected: int) -> str:
    if found == expected + VHAP_TEETH_VERTICES:
        return (f" (VHAP meshes carry {VHAP_TEETH_VERTICES} teeth vertices after FLAME's {expected}: "
                f"vertices[:{expected}] are the model's)")
    if found < expected:
        return " (a cropped mesh, or one whose duplicate vertices were merged on export?)"
    return " (a mesh of another model, or one re-meshed or split along UV seams on export?)"


def read_mesh(path: PathLike, n_vertices: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an OBJ or PLY triangle mesh, vertices in file order -> (vertices (V, 3) float64,
    faces (F, 3) int64).

    n_vertices: the model's vertex count; a file with another count is refused (with a hint,
    e.g. for VHAP's 5143-vertex meshes). A file that is not OBJ/PLY, holds no mesh, no
    vertices or no faces (a point cloud), several meshes, or non-finite / out-of-range values is
    a FlameFileError.
    """
    import trimesh

    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise FlameFileError(path, f"not a mesh file this reader knows (.{suffix}); expected .obj or .ply")
    if not os.path.isfile(path):
        raise FlameFileError(path, "no such file" if not os.path.exists(path) else "not a file")
    with reading(path, f"{suffix.upper()} mesh"):
        kwargs = {"maintain_order": True} if suffix == "obj" else {}
        loaded = trimesh.load(path, file_type=suffix, process=False, **kwargs)
    if isinstance(loaded, trimesh.Scene):
        meshes = list(loaded.geometry.values())
        if not meshes:
            raise FlameFileError(path, f"holds no mesh (empty, or not an {suffix.upper()} file)")
        if len(meshes) > 1:
            raise FlameFileError(path, f"holds {len(meshes)} meshes; expected one")
        loaded = meshes[0]
    if isinstance(loaded, trimesh.PointCloud):
        raise FlameFileError(path, f"has {len(loaded.vertices)} vertices but no faces (a point cloud, not a mesh)")
    if not isinstance(loaded, trimesh.Trimesh):
        raise FlameFileError(path, f"holds a {type(loaded).__name__}, not a triangle mesh")
    vertices = np.asarray(loaded.vertices, np.float64)
    faces = np.asarray(loaded.faces, np.int64)
    if len(vertices) == 0:
        raise FlameFileError(path, "holds no vertices (empty mesh)")
    if len(faces) == 0:
        raise FlameFileError(path, f"has {len(vertices)} vertices but no faces (a point cloud, not a mesh)")
    if not np.isfinite(vertices).all():
        raise FlameFileError(path, "vertex positions hold NaN or infinite values")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FlameFileError(path, f"faces index vertices outside [0, {len(vertices)})")
    if n_vertices is not None and len(vertices) != n_vertices:
        raise FlameFileError(path, f"{len(vertices)} vertices but the model has {n_vertices}"
                                   + _vertex_count_hint(len(vertices), n_vertices))
    return vertices, faces


__all__ = ["FORMATS", "read_mesh", "write_mesh_sequence"]
