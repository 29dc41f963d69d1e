"""The embedded synthetic FLAME model: determinism, FLAME structure, a plausible head, rigging."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import cKDTree

import flamejax as fj
from flamejax import landmarks as lmk
from flamejax.synthetic import MASK_NAMES, make_flame, make_head, pca_basis
from flamejax.synthetic.rigging import JAW


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


@pytest.fixture(scope="module")
def tiny():
    return make_flame(0, size="tiny")


@pytest.fixture(scope="module")
def small():
    return make_flame(0, size="small")


def _forward(model, **params):
    p = fj.FlameParams(**{k: jnp.asarray(v, model.dtype) for k, v in params.items()})
    return _np(fj.flame_forward(model, p))


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_bit_identical_and_seeds_differ(tiny):
    again = make_flame(0, size="tiny")
    leaves_a, tree_a = jax.tree_util.tree_flatten(tiny)
    leaves_b, tree_b = jax.tree_util.tree_flatten(again)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = make_flame(1, size="tiny")
    assert not np.allclose(other.v_template, tiny.v_template)
    assert not np.allclose(other.identity_dirs, tiny.identity_dirs)
    assert not np.allclose(other.exprdirs, tiny.exprdirs)


def test_fewer_components_are_the_leading_ones(tiny):
    few = make_flame(0, size="tiny", n_shape=12, n_expr=7)
    assert few.n_shape == 12 and few.n_expr == 7
    np.testing.assert_allclose(few.identity_dirs, tiny.identity_dirs[:12], atol=1e-7)
    np.testing.assert_allclose(few.exprdirs, tiny.exprdirs[:7], atol=1e-7)


# --- FLAME structure -------------------------------------------------------------------------


def test_full_size_counts_like_flame():
    model = make_flame(0)
    v, f = model.v_template.shape[0], model.faces.shape[0]
    assert 4500 <= v <= 5600 and 9000 <= f <= 11000          # FLAME 2020: 5023 / 9976
    assert model.shapedirs.shape == (400, v, 3) and model.n_shape == 300 and model.n_expr == 100
    assert model.posedirs.shape == (36, v, 3)
    assert model.v_template.dtype == jnp.float32


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_structure(size, tiny, small):
    model = {"tiny": tiny, "small": small}[size]
    m = _np(model)
    v = m.v_template.shape[0]
    assert model.parents == (-1, 0, 1, 1, 1)
    assert m.shapedirs.shape == (400, v, 3) and m.posedirs.shape == (36, v, 3)
    assert m.j_regressor.shape == (5, v) and m.weights.shape == (v, 5)
    np.testing.assert_allclose(m.weights.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(m.j_regressor.sum(1), 1.0, atol=1e-6)
    assert m.weights.min() >= 0.0 and m.j_regressor.min() >= 0.0
    assert ((m.j_regressor > 0).sum(1) < 0.2 * v).all()        # sparse averages
    assert m.faces.dtype == np.int32 and m.faces.min() >= 0 and m.faces.max() < v
    tri = m.v_template[m.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-9                                  # no degenerate faces
    assert len(np.unique(np.sort(m.faces, axis=1), axis=0)) == len(m.faces)
    emb = m.landmarks
    n_f = len(m.faces)
    for faces, bary, shape in ((emb.static_faces, emb.static_bary, (51,)),
                               (emb.dynamic_faces, emb.dynamic_bary, (79, 17)),
                               (emb.mediapipe_faces, emb.mediapipe_bary, (105,))):
        assert faces.shape == shape and bary.shape == shape + (3,)
        assert faces.min() >= 0 and faces.max() < n_f
        assert bary.min() >= 0.0
        np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-6)
    assert set(m.masks) == set(MASK_NAMES)
    for name, ids in m.masks.items():
        assert ids.dtype == np.int32 and len(ids) > 0, name
        assert ids.min() >= 0 and ids.max() < v and len(np.unique(ids)) == len(ids), name


# --- a plausible head ------------------------------------------------------------------------


def test_looks_like_a_head(small):
    m = _np(small)
    v = m.v_template
    size = v.max(0) - v.min(0)
    assert 0.15 <= size[0] <= 0.2                              # width with ears, metres
    assert 0.25 <= size[1] <= 0.35 and 0.17 <= size[2] <= 0.24
    assert np.argmax(v[:, 2]) in set(m.masks["nose"].tolist())  # the nose sticks out most
    # Left/right symmetric: the mirrored vertex set is the vertex set.
    d, _ = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    assert d.max() < 1e-6
    # The eyeballs sit behind the face at eye height, left = +x, and the face is in front.
    joints = m.j_regressor @ v
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02
    assert joints[0, 1] < joints[1, 1] < joints[2, 1] < joints[3, 1]
    lm = _forward(small).landmarks
    nose_tip, chin, brow = lm[17 + 13], lm[8], lm[17 + 2]
    assert chin[1] < nose_tip[1] < brow[1]


def test_mirror_map_and_rigid_eyeballs_in_shape_space():
    mesh = make_head(0, size="tiny")
    np.testing.assert_allclose(mesh.vertices[mesh.mirror] * [-1, 1, 1], mesh.vertices, atol=1e-12)
    model = _np(make_flame(0, size="tiny", n_shape=20, n_expr=20))
    for ids in model.masks["left_eyeball"], model.masks["right_eyeball"]:
        d = model.identity_dirs[:, ids]                         # translation only
        np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-7)
        np.testing.assert_array_equal(model.exprdirs[:, ids], 0.0)


def test_shape_samples_are_plausible(small):
    dirs = np.asarray(small.identity_dirs, np.float64)
    first = np.linalg.norm(dirs[0], axis=-1).max()
    assert 0.005 < first < 0.03                                # ~1-2 cm for the first component
    beta = np.random.default_rng(0).normal(size=(8, small.n_shape))
    disp = np.einsum("ns,svx->nvx", beta, dirs)
    rms = np.sqrt((disp ** 2).sum(-1).mean(-1))
    assert (rms > 0.002).all() and (rms < 0.03).all()


# --- bases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["identity", "expression"])
def test_bases_orthogonal_and_ordered(small, which):
    d = np.asarray(small.identity_dirs if which == "identity" else small.exprdirs, np.float64)
    flat = d.reshape(len(d), -1)
    gram = flat @ flat.T
    norms = np.sqrt(np.diag(gram))
    np.testing.assert_allclose(gram / np.outer(norms, norms), np.eye(len(d)), atol=1e-4)
    assert (np.diff(norms) <= 1e-6 * norms[0]).all()           # decreasing variance
    assert norms[-1] > 0


def test_pca_basis_recovers_the_samples_variance():
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(6, 10, 3))
    acts = rng.normal(size=(500, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    comps, std = pca_basis(fields, 6, acts)
    samples = (acts @ fields.reshape(6, -1))
    total = np.trace(samples.T @ samples) / len(samples)
    np.testing.assert_allclose((std ** 2).sum(), total, rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(comps.reshape(6, -1), axis=1), std, rtol=1e-10)
    assert (np.diff(std) <= 0).all()
    with pytest.raises(ValueError):
        pca_basis(fields, 7, acts)


# --- rigging ---------------------------------------------------------------------------------


def test_jaw_opens_the_mouth(small):
    m = _np(small)
    rest = _forward(small)
    opened = _forward(small, jaw_pose=[0.3, 0.0, 0.0])
    gap = lambda out: out.landmarks[17 + 45, 1] - out.landmarks[17 + 49, 1]  # noqa: E731  iBUG 63 - 67
    assert abs(gap(rest)) < 1e-4                              # lips closed at rest
    assert gap(opened) > 0.01                                 # open by more than a centimetre
    assert opened.landmarks[8, 1] < rest.landmarks[8, 1] - 0.01   # the chin drops
    still = m.weights[:, JAW] == 0.0
    np.testing.assert_allclose(opened.vertices[still], rest.vertices[still], atol=1e-6)
    for name in ("forehead", "nose", "eye_region", "scalp", "left_eyeball", "right_eyeball"):
        assert still[m.masks[name]].all(), name


def test_eye_pose_rotates_only_the_eyeballs(small):
    m = _np(small)
    rest = _forward(small)
    out = _forward(small, eye_pose=[0.0, 0.4, 0.0, 0.2, 0.0, 0.0])
    eyes = np.zeros(len(m.v_template), bool)
    for k, name in ((3, "left_eyeball"), (4, "right_eyeball")):
        ids = m.masks[name]
        eyes[ids] = True
        c = rest.joints[k]
        np.testing.assert_allclose(np.linalg.norm(out.vertices[ids] - c, axis=1),
                                   np.linalg.norm(rest.vertices[ids] - c, axis=1), atol=1e-6)
        assert np.abs(out.vertices[ids] - rest.vertices[ids]).max() > 0.002
        r = np.asarray(fj.rotations.axis_angle_to_matrix(jnp.array([[0.0, 0.4, 0.0], [0.2, 0.0, 0.0]])[k - 3]))
        np.testing.assert_allclose(out.vertices[ids], (rest.vertices[ids] - c) @ r.T + c, atol=1e-6)
    np.testing.assert_allclose(out.vertices[~eyes], rest.vertices[~eyes], atol=1e-7)


def test_pose_correctives_are_local(small):
    m = _np(small)
    pd = m.posedirs
    assert np.abs(pd[18:]).max() == 0.0                       # eyes: none
    assert 0.0 < np.abs(pd[:18]).max() < 0.01
    for name in ("forehead", "left_eyeball", "right_eyeball", "nose", "scalp"):
        assert np.abs(pd[:, m.masks[name]]).max() == 0.0, name


def test_expressions_move_the_face_not_the_scalp(small):
    m = _np(small)
    d = np.linalg.norm(m.exprdirs, axis=-1)                   # (E, V)
    assert d[:, m.masks["face"]].max(1).min() > 0.0
    assert d[:, m.masks["scalp"]].max() < 0.1 * d.max()
    psi = np.random.default_rng(1).normal(size=small.n_expr)
    out = _forward(small, expression=psi)
    assert np.isfinite(out.vertices).all()


def test_yaw_selects_another_contour(small):
    m = _np(small)
    emb = m.landmarks
    assert (emb.dynamic_faces[30] != emb.dynamic_faces[0]).any()
    assert (emb.dynamic_faces[60] != emb.dynamic_faces[0]).any()
    yaw = 0.5
    turned = _forward(small, global_pose=[0.0, yaw, 0.0])
    r = np.asarray(fj.rotations.axis_angle_to_matrix(jnp.array([0.0, yaw, 0.0])))
    b = int(lmk.yaw_bin(jnp.asarray(r)))
    assert b != 0 and (emb.dynamic_faces[b] != emb.dynamic_faces[0]).any()
    frontal_contour = np.asarray(lmk.points_on_faces(turned.vertices, m.faces, emb.dynamic_faces[0],
                                                     emb.dynamic_bary[0]))
    moved = np.linalg.norm(turned.landmarks[:17] - frontal_contour, axis=1)
    assert moved.max() > 0.005
    # Only the side turning away slides onto the cheek silhouette; the chin point stays put.
    assert moved[8] < 1e-6
