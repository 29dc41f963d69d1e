"""FLAME model files: the real layouts load, save -> load is exact, bad files fail clearly."""

from __future__ import annotations

import importlib.util
import io
import pickle
import pickletools
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

import flamejax as fj
from flamejax.io import (
    FlameFileError,
    load_flame,
    read_flame_arrays,
    save_deca_embedding,
    save_flame,
    save_masks,
    save_mediapipe_embedding,
    save_ringnet_embedding,
)
from flamejax.io.pickle_writer import LegacyNamesPickler
from io_fixtures import flame2020_pickle, random_model, raw_flame_file

HAVE_SMPLX = all(importlib.util.find_spec(m) is not None for m in ("torch", "smplx"))


@pytest.fixture(scope="module")
def raw():
    return raw_flame_file(seed=3)


def assert_matches_raw(model: fj.FlameModel, raw: dict, n_shape=300, n_expr=100):
    assert model.n_shape == n_shape and model.n_expr == n_expr
    sd = raw["shapedirs"]
    expected = np.concatenate([sd[:, :, :n_shape], sd[:, :, 300:300 + n_expr]], axis=2)
    np.testing.assert_array_equal(model.shapedirs, np.transpose(expected, (2, 0, 1)).astype(np.float32))
    np.testing.assert_array_equal(model.posedirs, np.transpose(raw["posedirs"], (2, 0, 1)).astype(np.float32))
    np.testing.assert_array_equal(model.v_template, raw["v_template"].astype(np.float32))
    np.testing.assert_array_equal(model.j_regressor, raw["J_regressor"].astype(np.float32))
    np.testing.assert_array_equal(model.weights, raw["weights"].astype(np.float32))
    np.testing.assert_array_equal(model.faces, raw["f"].astype(np.int32))
    assert model.faces.dtype == jnp.int32 and model.v_template.dtype == jnp.float32
    assert model.parents == (-1, 0, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Real layouts


def test_flame2020_python2_pickle_loads_without_chumpy(tmp_path, raw, monkeypatch):
    monkeypatch.setitem(sys.modules, "chumpy", None)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(flame2020_pickle(raw))
    assert_matches_raw(load_flame(path), raw)


def test_flame2023_open_plain_numpy_pickle(tmp_path, raw):
    data = dict(raw, J_regressor=scipy.sparse.csc_matrix(raw["J_regressor"]))
    path = tmp_path / "flame2023_Open.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    assert_matches_raw(load_flame(path), raw)


def test_npz_with_dense_sparse_object_or_sparse_parts_regressor(tmp_path, raw):
    m = scipy.sparse.csc_matrix(raw["J_regressor"])
    variants = {
        "dense": dict(raw),
        "object": dict(raw, J_regressor=np.array(m, dtype=object)),
        "parts": {**{k: v for k, v in raw.items() if k != "J_regressor"},
                  "J_regressor_data": m.data, "J_regressor_indices": m.indices,
                  "J_regressor_indptr": m.indptr, "J_regressor_shape": np.array(m.shape)},
    }
    for name, data in variants.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **data)
        assert_matches_raw(load_flame(path), raw)


def test_fewer_expression_columns_and_truncation(tmp_path, raw):
    path = tmp_path / "generic_model.pkl"
    short = dict(raw, shapedirs=raw["shapedirs"][:, :, :350])
    path.write_bytes(flame2020_pickle(short))
    assert_matches_raw(load_flame(path), short, 300, 50)
    assert_matches_raw(load_flame(path, n_shape=100, n_expr=10), short, 100, 10)
    with pytest.raises(ValueError, match="n_expr=60"):
        load_flame(path, n_expr=60)


def test_float64_on_request(tmp_path, raw):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(flame2020_pickle(raw))
    with pytest.raises(ValueError, match="x64"):
        load_flame(path, dtype=jnp.float64)
    with jax.enable_x64(True):
        model = load_flame(path, dtype=jnp.float64)
        assert model.shapedirs.dtype == jnp.float64
        np.testing.assert_array_equal(model.v_template, raw["v_template"])


# ---------------------------------------------------------------------------------------------
# Writing


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("counts", [(12, 8), (300, 100)])
def test_save_load_round_trip_is_exact(tmp_path, suffix, counts):
    model = random_model(seed=1, n_shape=counts[0], n_expr=counts[1], landmarks=True)
    path = tmp_path / f"generic_model{suffix}"
    save_flame(model, path)
    save_deca_embedding(model.landmarks, tmp_path / "landmark_embedding.npy")
    save_mediapipe_embedding(model.landmarks, tmp_path / "mp.npz", landmark_indices=np.arange(105))
    save_masks(model.masks, tmp_path / "FLAME_masks.pkl")
    loaded = load_flame(path, landmarks=tmp_path / "landmark_embedding.npy",
                        mediapipe=tmp_path / "mp.npz", masks=tmp_path / "FLAME_masks.pkl")
    assert (loaded.n_shape, loaded.parents) == (model.n_shape, model.parents)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(model)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(model)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_save_round_trip_float64(tmp_path):
    with jax.enable_x64(True):
        model = random_model(seed=2, dtype=jnp.float64)
        save_flame(model, tmp_path / "m.pkl")
        loaded = load_flame(tmp_path / "m.pkl", dtype=jnp.float64)
        np.testing.assert_array_equal(loaded.shapedirs, model.shapedirs)
        np.testing.assert_array_equal(loaded.posedirs, model.posedirs)


def test_saved_pickle_has_flames_layout(tmp_path):
    model = random_model(seed=4, n_shape=12, n_expr=8)
    save_flame(model, tmp_path / "m.pkl")
    with open(tmp_path / "m.pkl", "rb") as fh:
        data = pickle.load(fh, encoding="latin1")  # trusted: we just wrote it
    n = model.n_vertices
    assert isinstance(data["J_regressor"], scipy.sparse.csc_matrix)
    assert data["J_regressor"].shape == (5, n)
    assert data["f"].dtype == np.uint32 and data["f"].shape == (100, 3)
    assert data["shapedirs"].shape == (n, 3, 400) and data["shapedirs"].dtype == np.float64
    assert data["posedirs"].shape == (n, 3, 36) and data["weights"].shape == (n, 5)
    assert data["kintree_table"].tolist() == [[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]
    np.testing.assert_allclose(data["J"], data["J_regressor"] @ data["v_template"])
    assert (data["bs_style"], data["bs_type"]) == ("lbs", "lrotmin")
    assert (data["flamejax_n_shape"], data["flamejax_n_expr"]) == (12, 8)
    # FLAME's convention holds in the file: expressions start at column 300, padding is zero.
    np.testing.assert_array_equal(data["shapedirs"][:, :, 300:308],
                                  np.transpose(np.asarray(model.exprdirs, np.float64), (1, 2, 0)))
    assert not data["shapedirs"][:, :, 12:300].any() and not data["shapedirs"][:, :, 308:].any()


def pickle_globals(data: bytes) -> set[str]:
    """The globals a pickle names (GLOBAL and STACK_GLOBAL), as "module name" strings."""
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            names.add(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(" ".join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    return names


def test_saved_pickle_names_only_what_old_numpy_and_scipy_import(tmp_path):
    """NumPy < 1.26 has no numpy._core, SciPy < 1.8 no scipy.sparse._csc (numpy issue 28340):
    the file names the paths FLAME 2020's own file uses for NumPy, and the public SciPy one."""
    model = random_model(seed=7, n_shape=12, n_expr=8)
    path = tmp_path / "m.pkl"
    save_flame(model, path)
    raw = path.read_bytes()
    assert pickle_globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray",
                                   "numpy dtype", "scipy.sparse csc_matrix"}
    assert b"numpy._core" not in raw and b"scipy.sparse._" not in raw
    assert next(pickletools.genops(raw))[1] == 4  # protocol 4 (see save_flame)
    # Plain pickle reads it in this environment, silently (no deprecated module paths) ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")  # trusted: we just wrote it
    assert isinstance(data["J_regressor"], scipy.sparse.csc_matrix)
    np.testing.assert_array_equal(data["J_regressor"].toarray(), np.asarray(model.j_regressor, np.float64))
    np.testing.assert_array_equal(data["v_template"], np.asarray(model.v_template, np.float64))
    assert data["f"].dtype == np.uint32
    # ... and so does the allow-list loader, giving back the model exactly.
    loaded = load_flame(path)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("protocol", [2, 4])
def test_legacy_pickler_maps_scalars_and_refuses_new_only_names(protocol):
    out = io.BytesIO()
    value = {"s": np.float32(1.5), "i": np.int64(3), "a": np.arange(3, dtype=np.uint32),
             "m": scipy.sparse.csr_matrix(np.eye(2))}
    LegacyNamesPickler(out, protocol=protocol).dump(value)
    # Python 3 writes bytes at protocol 2 through _codecs.encode (a Python builtin module).
    assert pickle_globals(out.getvalue()) - {"_codecs encode"} == {
        "numpy.core.multiarray scalar", "numpy.core.multiarray _reconstruct", "numpy ndarray",
        "numpy dtype", "scipy.sparse csr_matrix"}
    back = pickle.loads(out.getvalue())
    assert back["s"] == np.float32(1.5) and back["s"].dtype == np.float32 and back["i"] == 3
    np.testing.assert_array_equal(back["m"].toarray(), np.eye(2))
    # SciPy's sparse arrays live only in private modules old SciPy lacks: refused, not written.
    with pytest.raises(pickle.PicklingError, match="scipy.sparse._csc"):
        LegacyNamesPickler(io.BytesIO(), protocol=4).dump(scipy.sparse.csc_array(np.eye(2)))


def test_save_rejects_what_flame_files_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        save_flame(random_model(), tmp_path / "m.obj")
    with pytest.raises(ValueError, match="at most 300"):
        save_flame(random_model(n_shape=301, n_expr=0), tmp_path / "m.pkl")


@pytest.mark.skipif(not HAVE_SMPLX, reason="torch and smplx not installed")
@pytest.mark.parametrize("ext", ["pkl", "npz"])
def test_smplx_flame_reads_our_files_and_agrees(tmp_path, ext):
    import torch
    import smplx

    from flamejax.landmarks import ibug68_to_smplx_order

    model = random_model(seed=5, n_shape=12, n_expr=8, landmarks=True)
    save_flame(model, tmp_path / f"FLAME_NEUTRAL.{ext}")
    save_ringnet_embedding(model.landmarks, tmp_path / "flame_static_embedding.pkl",
                           tmp_path / "flame_dynamic_embedding.npy")
    layer = smplx.FLAME(model_path=str(tmp_path), ext=ext, num_betas=12, num_expression_coeffs=8,
                        use_face_contour=True, dtype=torch.float64)
    rng = np.random.default_rng(0)
    beta, psi, pose = rng.normal(size=12), rng.normal(size=8), rng.normal(0, 0.3, (5, 3))
    # smplx picks the contour from the global rotation alone (its FLAME NECK_IDX is 0), DECA
    # and flamejax from global @ neck; with a zero neck both agree.
    pose[1] = 0.0
    t = lambda a: torch.tensor(a[None], dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        ref = layer(betas=t(beta), expression=t(psi), global_orient=t(pose[0]), neck_pose=t(pose[1]),
                    jaw_pose=t(pose[2]), leye_pose=t(pose[3]), reye_pose=t(pose[4]))
    ours = fj.flame_forward(model, fj.FlameParams(
        shape=beta, expression=psi, global_pose=pose[0], neck_pose=pose[1], jaw_pose=pose[2],
        eye_pose=pose[3:].reshape(-1)))
    np.testing.assert_allclose(ref.vertices[0].numpy(), ours.vertices, atol=1e-6)
    np.testing.assert_allclose(ref.joints[0, 5:].numpy(),
                               ibug68_to_smplx_order(np.asarray(ours.landmarks)), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad files: one FlameFileError that names the file


def _corrupt(raw, **changes):
    return {**raw, **changes}


BAD_CONTENT = {
    "missing key": lambda r: {k: v for k, v in r.items() if k != "weights"},
    "shapedirs 2-d": lambda r: _corrupt(r, shapedirs=r["shapedirs"][:, :, 0]),
    "shapedirs wrong V": lambda r: _corrupt(r, shapedirs=r["shapedirs"][:-1]),
    "too few components": lambda r: _corrupt(r, shapedirs=r["shapedirs"][:, :, :200]),
    "posedirs not 36": lambda r: _corrupt(r, posedirs=r["posedirs"][:, :, :35]),
    "weights not (V,5)": lambda r: _corrupt(r, weights=r["weights"][:, :4]),
    "J_regressor wrong": lambda r: _corrupt(r, J_regressor=r["J_regressor"][:, :-1]),
    "faces out of range": lambda r: _corrupt(r, f=r["f"] + np.uint32(len(r["v_template"]))),
    "faces negative": lambda r: _corrupt(r, f=r["f"].astype(np.int64) - 1000),
    "faces not integer": lambda r: _corrupt(r, f=r["f"].astype(np.float64)),
    "faces not triangles": lambda r: _corrupt(r, f=r["f"][:, :2]),
    "kintree not FLAME": lambda r: _corrupt(r, kintree_table=np.array([[-1, 0, 1, 2, 1], [0, 1, 2, 3, 4]])),
    "kintree root": lambda r: _corrupt(r, kintree_table=np.array([[0, 0, 1, 1, 1], [0, 1, 2, 3, 4]])),
    "kintree shape": lambda r: _corrupt(r, kintree_table=np.array([[-1, 0, 1, 1], [0, 1, 2, 3]])),
    "NaN template": lambda r: _corrupt(r, v_template=np.where(np.eye(len(r["v_template"]), 3) > 0, np.nan, r["v_template"])),
    "inf posedirs": lambda r: _corrupt(r, posedirs=r["posedirs"] * np.inf),
    "string weights": lambda r: _corrupt(r, weights="heavy"),
    "bad n_shape key": lambda r: _corrupt(r, flamejax_n_shape=400),
}


@pytest.mark.parametrize("case", list(BAD_CONTENT))
def test_bad_model_content(tmp_path, raw, case):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(flame2020_pickle(BAD_CONTENT[case](raw)))
    with pytest.raises(FlameFileError) as err:
        load_flame(path)
    assert str(path) in str(err.value)


def test_bad_files(tmp_path, raw):
    full = flame2020_pickle(raw)
    cases = {
        "absent.pkl": None,
        "truncated.pkl": full[: len(full) // 2],
        "empty.pkl": b"",
        "list.pkl": pickle.dumps([1, 2, 3]),
        "model.obj": b"v 0 0 0\n",
        "garbage.npz": b"PK\x03\x04 not really",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(FlameFileError) as err:
            load_flame(path)
        assert str(path) in str(err.value), name
    with pytest.raises(FlameFileError, match="no such file"):
        load_flame(tmp_path / "absent.npz")
    with pytest.raises(FlameFileError, match="unknown FLAME model extension"):
        load_flame(tmp_path / "model.obj")


def test_attachments_are_checked_against_the_model(tmp_path):
    model = random_model(seed=6, landmarks=True)
    save_flame(model, tmp_path / "m.pkl")
    small = random_model(seed=6, n_faces=20)
    save_flame(small, tmp_path / "small.pkl")
    save_deca_embedding(model.landmarks, tmp_path / "lmk.npy")  # face ids up to 100
    with pytest.raises(FlameFileError, match="lmk.npy.*out of range for 20 faces"):
        load_flame(tmp_path / "small.pkl", landmarks=tmp_path / "lmk.npy")
    with pytest.raises(FlameFileError, match="<landmarks argument>"):
        load_flame(tmp_path / "small.pkl", landmarks=model.landmarks)
    save_masks({"face": np.array([0, 1, 999])}, tmp_path / "masks.pkl")
    with pytest.raises(FlameFileError, match="masks.pkl.*out of range for 60 vertices"):
        load_flame(tmp_path / "m.pkl", masks=tmp_path / "masks.pkl")
    with pytest.raises(ValueError, match="pass landmarks too"):
        load_flame(tmp_path / "m.pkl", mediapipe=model.landmarks)
    # In-memory objects are accepted too, and cast to the model's dtype.
    loaded = load_flame(tmp_path / "m.pkl", landmarks=model.landmarks, masks={"lips": [1, 2]})
    assert loaded.masks["lips"].dtype == jnp.int32
    np.testing.assert_array_equal(loaded.landmarks.mediapipe_bary, model.landmarks.mediapipe_bary)
    assert read_flame_arrays(tmp_path / "m.pkl").n_shape == model.n_shape
