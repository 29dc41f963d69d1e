"""Cross-check against smplx.FLAME (PyTorch), the reference implementation most FLAME code uses.

Needs the optional ``compare`` extra (torch, smplx): ``python3 scripts/dev.py test --compare``.
The synthetic model is written with our own writers to the FLAME pkl + RingNet landmark files and
loaded by smplx from those files, so this also checks that third-party FLAME code reads what
``save_flame`` writes.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flamejax as fj

torch = pytest.importorskip("torch", reason="torch not installed (optional 'compare' extra)")
smplx = pytest.importorskip("smplx", reason="smplx not installed (optional 'compare' extra)")

N_FRAMES = 6


@pytest.fixture(scope="module")
def written_model(tmp_path_factory):
    """The small synthetic model (float64) and the folder smplx loads it from."""
    model = fj.synthetic.make_flame(seed=3, size="small")
    folder = tmp_path_factory.mktemp("smplx_model")
    fj.io.save_flame(model, folder / "FLAME_NEUTRAL.pkl")
    fj.io.save_ringnet_embedding(model.landmarks, folder / "flame_static_embedding.pkl",
                                 folder / "flame_dynamic_embedding.npy")
    return model, folder


def random_frames(seed, n_shape, n_expr):
    rng = np.random.default_rng(seed)
    return dict(
        shape=rng.normal(size=(N_FRAMES, n_shape)),
        expression=1.5 * rng.normal(size=(N_FRAMES, n_expr)),
        global_pose=0.4 * rng.normal(size=(N_FRAMES, 3)),
        neck_pose=0.3 * rng.normal(size=(N_FRAMES, 3)),
        jaw_pose=np.abs(0.3 * rng.normal(size=(N_FRAMES, 3))),
        eye_pose=0.3 * rng.normal(size=(N_FRAMES, 6)),
        translation=0.05 * rng.normal(size=(N_FRAMES, 3)),
    )


def smplx_forward(folder, frames):
    flame = smplx.FLAME(
        model_path=str(folder), num_betas=300, num_expression_coeffs=100, batch_size=N_FRAMES,
        use_face_contour=True, dtype=torch.float64,
        static_landmark_embedding_path=str(folder / "flame_static_embedding.pkl"),
        dynamic_landmark_embedding_path=str(folder / "flame_dynamic_embedding.npy"))
    t = {k: torch.from_numpy(v) for k, v in frames.items()}
    with torch.no_grad():
        out = flame(betas=t["shape"], expression=t["expression"], global_orient=t["global_pose"],
                    neck_pose=t["neck_pose"], jaw_pose=t["jaw_pose"], leye_pose=t["eye_pose"][:, :3],
                    reye_pose=t["eye_pose"][:, 3:], transl=t["translation"])
    joints = out.joints.numpy()  # smplx appends the 68 landmarks (static first) to the joints
    return dict(vertices=out.vertices.numpy(), joints=joints[:, :5], lmk=joints[:, -68:])


def test_forward_matches_smplx_float64(written_model, x64):
    model, folder = written_model
    model = model.astype(jnp.float64)
    # smplx chooses the jaw contour by the global rotation alone (its FLAME neck index is 0).
    model = dataclasses.replace(model, landmarks=dataclasses.replace(model.landmarks, contour_from_neck=False))
    frames = random_frames(0, model.n_shape, model.n_expr)
    ref = smplx_forward(folder, frames)
    ours = jax.vmap(fj.flame_forward, in_axes=(None, 0))(model, fj.FlameParams(**frames))

    vertex_error = np.abs(np.asarray(ours.vertices) - ref["vertices"]).max()
    assert vertex_error < 1e-5, f"max vertex difference {vertex_error:.3e} m"  # the target
    assert vertex_error < 1e-9  # what float64 actually gives (smplx adds 1e-8 inside its Rodrigues)
    np.testing.assert_allclose(np.asarray(ours.joints), ref["joints"], atol=1e-9)
    # smplx's landmarks differ from barycentric points of its own vertices by up to ~5e-9 m
    # (checked: part of its landmark path runs in float32), hence the looser bound.
    np.testing.assert_allclose(fj.landmarks.ibug68_to_smplx_order(np.asarray(ours.landmarks)),
                               ref["lmk"], atol=2e-8)


def test_fast_path_matches_smplx_float64(written_model, x64):
    model, folder = written_model
    model = model.astype(jnp.float64)
    frames = random_frames(1, model.n_shape, model.n_expr)
    frames["shape"][:] = frames["shape"][0]  # one identity for every frame
    ref = smplx_forward(folder, frames)
    fixed = fj.bind_identity(model, jnp.asarray(frames["shape"][0]))
    params = fj.FlameParams(**{k: v for k, v in frames.items() if k != "shape"})
    ours = jax.vmap(fj.flame_forward_fixed, in_axes=(None, 0))(fixed, params)
    assert np.abs(np.asarray(ours.vertices) - ref["vertices"]).max() < 1e-9


def test_npz_layout_loads_in_smplx_too(written_model, tmp_path, x64):
    model, _ = written_model
    fj.io.save_flame(model, tmp_path / "FLAME_NEUTRAL.npz")
    fj.io.save_ringnet_embedding(model.landmarks, tmp_path / "flame_static_embedding.pkl",
                                 tmp_path / "flame_dynamic_embedding.npy")  # smplx always reads it
    flame = smplx.FLAME(model_path=str(tmp_path), ext="npz", num_betas=300, num_expression_coeffs=100,
                        use_face_contour=False, dtype=torch.float64)
    with torch.no_grad():
        ref = flame().vertices.numpy()[0]
    ours = fj.flame_forward(model.astype(jnp.float64), fj.FlameParams()).vertices
    assert np.abs(np.asarray(ours) - ref).max() < 1e-9
