"""Landmark embedding files (DECA, RingNet, MediaPipe) and FLAME_masks.pkl."""

from __future__ import annotations

import importlib.util
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.io import (
    FlameFileError,
    MediapipeEmbedding,
    load_deca_embedding,
    load_landmark_embedding,
    load_masks,
    load_mediapipe_embedding,
    load_ringnet_embedding,
    save_deca_embedding,
    save_masks,
    save_mediapipe_embedding,
    save_ringnet_embedding,
    with_mediapipe,
)
from flamejax.io.npy import write_npy_object
from flamejax.io.torch_pickle import TensorForPickle
from io_fixtures import py2_dumps, random_bary, random_embedding

N_FACES = 100


@pytest.fixture
def embedding():
    return random_embedding(np.random.default_rng(0), N_FACES, mediapipe=False)


def assert_same(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def deca_dict(emb, torch_tensors=True):
    """DECA's landmark_embedding.npy contents: numpy static/full tables, torch dynamic tables."""
    wrap = TensorForPickle if torch_tensors else np.asarray
    return {
        "static_lmk_faces_idx": np.asarray(emb.static_faces, np.int64),
        "static_lmk_bary_coords": np.asarray(emb.static_bary, np.float64),
        "dynamic_lmk_faces_idx": wrap(np.asarray(emb.dynamic_faces, np.int64)),
        "dynamic_lmk_bary_coords": wrap(np.asarray(emb.dynamic_bary, np.float32)),
        "full_lmk_faces_idx": np.zeros((1, 68), np.int64),
        "full_lmk_bary_coords": np.full((1, 68, 3), 1 / 3),
    }


def test_deca_file_written_without_torch_reads_without_torch(tmp_path, embedding, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "landmark_embedding.npy"
    write_npy_object(path, deca_dict(embedding))
    assert_same(load_deca_embedding(path, n_faces=N_FACES), embedding)
    assert_same(load_landmark_embedding(path), embedding)
    # Our writer produces the same thing.
    save_deca_embedding(embedding, tmp_path / "ours.npy")
    assert_same(load_landmark_embedding(tmp_path / "ours.npy"), embedding)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_deca_file_written_by_real_torch(tmp_path, embedding):
    import torch

    data = deca_dict(embedding, torch_tensors=False)
    data["dynamic_lmk_faces_idx"] = torch.tensor(data["dynamic_lmk_faces_idx"])
    data["dynamic_lmk_bary_coords"] = torch.tensor(data["dynamic_lmk_bary_coords"])
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, data, allow_pickle=True)
    assert_same(load_deca_embedding(path), embedding)
    # ... and DECA's own loading code reads what we write.
    save_deca_embedding(embedding, tmp_path / "ours.npy")
    theirs = np.load(tmp_path / "ours.npy", allow_pickle=True, encoding="latin1")[()]
    assert torch.equal(theirs["dynamic_lmk_faces_idx"], data["dynamic_lmk_faces_idx"])
    assert theirs["dynamic_lmk_bary_coords"].dtype == torch.float32
    assert theirs["full_lmk_faces_idx"].shape == (1, 68) and theirs["full_lmk_bary_coords"].shape == (1, 68, 3)


def test_ringnet_pair_python2_static_pickle(tmp_path, embedding):
    static = tmp_path / "flame_static_embedding.pkl"
    dynamic = tmp_path / "flame_dynamic_embedding.npy"
    static.write_bytes(py2_dumps({"lmk_face_idx": np.asarray(embedding.static_faces, np.uint32),
                                  "lmk_b_coords": np.asarray(embedding.static_bary, np.float64)}))
    np.save(dynamic, {"lmk_face_idx": np.asarray(embedding.dynamic_faces, np.int64),
                      "lmk_b_coords": np.asarray(embedding.dynamic_bary, np.float64)}, allow_pickle=True)
    assert_same(load_ringnet_embedding(static, dynamic, n_faces=N_FACES), embedding)
    assert_same(load_landmark_embedding(dynamic, static), embedding)  # any order
    save_ringnet_embedding(embedding, tmp_path / "s.pkl", tmp_path / "d.npy")
    assert_same(load_ringnet_embedding(tmp_path / "s.pkl", tmp_path / "d.npy"), embedding)


def test_mediapipe_npz_and_merging(tmp_path, embedding):
    rng = np.random.default_rng(1)
    mp = MediapipeEmbedding(rng.integers(0, N_FACES, 105), random_bary(rng, (105,)),
                            rng.integers(0, 468, 105))
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(path, lmk_face_idx=mp.faces.astype(np.uint32), lmk_b_coords=mp.bary,
             landmark_indices=mp.landmark_indices)
    loaded = load_mediapipe_embedding(path, n_faces=N_FACES)
    for got, want in zip(loaded, mp):
        np.testing.assert_array_equal(got, want)
    save_deca_embedding(embedding, tmp_path / "lmk.npy")
    merged = load_landmark_embedding(tmp_path / "lmk.npy", path)
    expected = with_mediapipe(embedding, mp)
    assert_same(merged, expected)
    save_mediapipe_embedding(mp, tmp_path / "again.npz")
    assert_same(load_landmark_embedding(tmp_path / "lmk.npy", tmp_path / "again.npz"), expected)
    save_mediapipe_embedding(expected, tmp_path / "from_emb.npz", landmark_indices=mp.landmark_indices)
    np.testing.assert_array_equal(load_mediapipe_embedding(tmp_path / "from_emb.npz").landmark_indices,
                                  mp.landmark_indices)


def test_float64_embedding(tmp_path, embedding):
    save_ringnet_embedding(embedding, tmp_path / "s.pkl", tmp_path / "d.npy")
    with jax.enable_x64(True):
        emb = load_landmark_embedding(tmp_path / "s.pkl", tmp_path / "d.npy", dtype=jnp.float64)
        assert emb.static_bary.dtype == jnp.float64 and emb.static_faces.dtype == jnp.int32


def _bad(tmp_path, embedding, case):
    """Write one broken embedding file; returns its paths for load_landmark_embedding."""
    data = deca_dict(embedding, torch_tensors=False)
    path = tmp_path / "landmark_embedding.npy"
    if case == "out of range":
        data["static_lmk_faces_idx"] = data["static_lmk_faces_idx"] + N_FACES
    elif case == "negative":
        data["dynamic_lmk_faces_idx"] = -data["dynamic_lmk_faces_idx"] - 1
    elif case == "bary sum":
        data["static_lmk_bary_coords"] = data["static_lmk_bary_coords"] * 1.5
    elif case == "NaN":
        data["dynamic_lmk_bary_coords"] = data["dynamic_lmk_bary_coords"] * np.nan
    elif case == "float ids":
        data["static_lmk_faces_idx"] = data["static_lmk_faces_idx"].astype(np.float64)
    elif case == "wrong bins":
        data["dynamic_lmk_faces_idx"] = data["dynamic_lmk_faces_idx"][:40]
    elif case == "unknown keys":
        data = {"something": np.zeros(3)}
    elif case == "not a dict":
        data = [1, 2, 3]
    elif case == "plain array":
        np.save(path, np.zeros(3))
        return (path,)
    elif case == "static only":
        path = tmp_path / "flame_static_embedding.pkl"
        path.write_bytes(pickle.dumps({"lmk_face_idx": data["static_lmk_faces_idx"],
                                       "lmk_b_coords": data["static_lmk_bary_coords"]}))
        return (path,)
    elif case == "twice":
        write_npy_object(path, data)
        return (path, path)
    elif case == "extension":
        path = tmp_path / "landmarks.txt"
        path.write_text("1 2 3")
        return (path,)
    elif case == "missing":
        return (tmp_path / "absent.npy",)
    write_npy_object(path, data)
    return (path,)


BAD_CASES = ["out of range", "negative", "bary sum", "NaN", "float ids", "wrong bins", "unknown keys",
             "not a dict", "plain array", "static only", "twice", "extension", "missing"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_embedding_files(tmp_path, embedding, case):
    paths = _bad(tmp_path, embedding, case)
    with pytest.raises(FlameFileError) as err:
        load_landmark_embedding(*paths, n_faces=N_FACES)
    assert str(paths[0]) in str(err.value)


def test_specific_readers_refuse_the_wrong_format(tmp_path, embedding):
    save_ringnet_embedding(embedding, tmp_path / "s.pkl", tmp_path / "d.npy")
    with pytest.raises(FlameFileError, match="d.npy: not a DECA"):
        load_deca_embedding(tmp_path / "d.npy")
    with pytest.raises(FlameFileError, match="s.pkl: holds no dynamic"):
        load_ringnet_embedding(tmp_path / "s.pkl", tmp_path / "s.pkl")
    with pytest.raises(FlameFileError, match="d.npy: not a MediaPipe"):
        load_mediapipe_embedding(tmp_path / "d.npy")


# ---------------------------------------------------------------------------------------------
# FLAME_masks.pkl


def test_masks_python2_file_and_round_trip(tmp_path):
    masks = {"face": np.arange(10, dtype=np.int64), "lips": np.array([3, 5, 7]), "empty": np.zeros(0, int)}
    path = tmp_path / "FLAME_masks.pkl"
    path.write_bytes(py2_dumps(masks))
    loaded = load_masks(path, n_vertices=60)
    assert list(loaded) == list(masks)
    for name, ids in masks.items():
        assert loaded[name].dtype == jnp.int32
        np.testing.assert_array_equal(loaded[name], ids)
    save_masks(loaded, tmp_path / "again.pkl")
    for name, ids in load_masks(tmp_path / "again.pkl").items():
        np.testing.assert_array_equal(ids, masks[name])


@pytest.mark.parametrize("content, message", [
    ({"face": np.array([0, 60])}, "out of range for 60 vertices"),
    ({"face": np.array([-1])}, "negative"),
    ({"face": np.array([0.5])}, "integer"),
    ({"face": np.zeros((2, 2), int)}, "shape"),
    ({1: np.array([0])}, "not a string"),
    ([np.array([0])], "dict"),
])
def test_bad_masks(tmp_path, content, message):
    path = tmp_path / "FLAME_masks.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(FlameFileError, match=message) as err:
        load_masks(path, n_vertices=60)
    assert str(path) in str(err.value)
