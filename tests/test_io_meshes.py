"""Mesh sequences (flamejax.io.meshes): one OBJ / PLY per frame, read back in vertex order.

Written files are read back with trimesh itself and (OBJ) with a plain-text parse written here;
vertices must come back in order (none merged, dropped or moved), faces exactly. Files that are
not meshes, or meshes of another vertex count, fail with a FlameFileError naming the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from flamejax.io import FlameFileError, read_mesh, write_mesh_sequence


def sequence(t=3, v=7, seed=0):
    """(t, v, 3) float32 vertices (metres, head-sized), faces with an unreferenced vertex (v - 1)
    and two coincident vertices (0 and 1), which a processing loader would drop / merge."""
    rng = np.random.default_rng(seed)
    vertices = rng.normal(0, 0.1, (t, v, 3)).astype(np.float32)
    vertices[:, 1] = vertices[:, 0]
    faces = np.array([[0, 2, 3], [1, 3, 4], [2, 4, 5], [5, 3, 2]])
    return vertices, faces


def parse_obj(path):
    """Vertices and 0-based faces of a plain OBJ, by hand."""
    vertices, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            vertices.append([float(x) for x in parts[1:4]])
        elif parts and parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    return np.array(vertices), np.array(faces)


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_sequence_files_read_back_in_vertex_order(tmp_path, fmt):
    vertices, faces = sequence()
    paths = write_mesh_sequence(tmp_path / "seq", vertices, faces, frame_ids=[12, 13, 40], format=fmt)
    assert [p.name for p in paths] == [f"frame_00012.{fmt}", f"frame_00013.{fmt}", f"frame_00040.{fmt}"]
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [p.name for p in paths]   # no temporaries
    atol = 1e-9 if fmt == "obj" else 0.0   # OBJ: 9 decimals; PLY: float64, exact
    for path, expected in zip(paths, vertices):
        loaded = trimesh.load(path, process=False, maintain_order=True)
        np.testing.assert_allclose(loaded.vertices, expected, rtol=0, atol=atol)
        np.testing.assert_array_equal(loaded.faces, faces)
        got_v, got_f = read_mesh(path, n_vertices=len(expected))
        assert got_v.shape == expected.shape and got_f.dtype == np.int64
        np.testing.assert_allclose(got_v, expected, rtol=0, atol=atol)
        np.testing.assert_array_equal(got_f, faces)
        if fmt == "obj":
            text_v, text_f = parse_obj(path)
            np.testing.assert_allclose(text_v, expected, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(text_f, faces)
            assert "vn " not in path.read_text() and "vt " not in path.read_text()


def test_default_names_stem_and_overwrite(tmp_path):
    vertices, faces = sequence(t=2)
    paths = write_mesh_sequence(tmp_path, vertices, faces, stem="avatar")
    assert [p.name for p in paths] == ["avatar_00000.obj", "avatar_00001.obj"]
    write_mesh_sequence(tmp_path, vertices[::-1], faces, stem="avatar")   # replaced in place
    np.testing.assert_allclose(parse_obj(paths[0])[0], vertices[1], atol=1e-9)


def test_writer_refuses_bad_arguments(tmp_path):
    vertices, faces = sequence(t=2)
    with pytest.raises(ValueError, match="format"):
        write_mesh_sequence(tmp_path, vertices, faces, format="stl")
    with pytest.raises(ValueError, match=r"\(T, V, 3\)"):
        write_mesh_sequence(tmp_path, vertices[0], faces)
    with pytest.raises(ValueError, match="outside"):
        write_mesh_sequence(tmp_path, vertices, faces + 10)
    with pytest.raises(ValueError, match="unique"):
        write_mesh_sequence(tmp_path, vertices, faces, frame_ids=[4, 4])
    bad = vertices.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_mesh_sequence(tmp_path, bad, faces)
    assert not list(tmp_path.iterdir())


def test_vertex_count_mismatch_gives_a_hint(tmp_path):
    rng = np.random.default_rng(1)
    faces = np.array([[0, 1, 2]])
    (path,) = write_mesh_sequence(tmp_path, rng.normal(0, 0.1, (1, 5143, 3)), faces, format="ply")
    with pytest.raises(FlameFileError, match=r"frame_00000\.ply: 5143 vertices but the model has 5023 "
                                             r"\(VHAP meshes carry 120 teeth vertices"):
        read_mesh(path, n_vertices=5023)
    (path,) = write_mesh_sequence(tmp_path / "small", rng.normal(0, 0.1, (1, 6, 3)), faces)
    with pytest.raises(FlameFileError, match="6 vertices but the model has 7"):
        read_mesh(path, n_vertices=7)


@pytest.mark.parametrize("name, content, match", [
    ("text.obj", "hello world\nnot a mesh\n", "holds no mesh"),
    ("empty.obj", "", "holds no mesh"),
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "3 vertices but no faces"),
    ("binary.obj", bytes(range(256)), "holds no mesh"),
    ("text.ply", "hello", "not a readable PLY mesh"),
    ("cut.ply", None, "not a readable PLY mesh"),
    ("mesh.stl", "solid x\nendsolid x\n", r"\.stl\); expected \.obj or \.ply"),
])
def test_reader_refuses_files_that_are_not_meshes(tmp_path, name, content, match):
    path = tmp_path / name
    if content is None:   # a binary PLY cut short
        vertices, faces = sequence(t=1)
        (full,) = write_mesh_sequence(tmp_path / "full", vertices, faces, format="ply")
        path.write_bytes(full.read_bytes()[:-20])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(FlameFileError, match=name.replace(".", r"\.") + ": .*" + match):
        read_mesh(path)


def test_reader_refuses_point_clouds_and_missing_files(tmp_path):
    cloud = trimesh.PointCloud(np.random.default_rng(2).normal(size=(4, 3)))
    (tmp_path / "cloud.ply").write_bytes(cloud.export(file_type="ply"))
    with pytest.raises(FlameFileError, match=r"cloud\.ply: has 4 vertices but no faces"):
        read_mesh(tmp_path / "cloud.ply")
    with pytest.raises(FlameFileError, match=r"nothere\.obj: no such file"):
        read_mesh(tmp_path / "nothere.obj")
    (tmp_path / "folder.obj").mkdir()
    with pytest.raises(FlameFileError, match=r"folder\.obj: not a file"):
        read_mesh(tmp_path / "folder.obj")
