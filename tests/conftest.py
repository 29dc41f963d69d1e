"""Shared fixtures: small random FLAME-structured models built directly (no flamejax.io/synthetic).

``raw_flame`` holds plain NumPy arrays in the layout of FLAME's own files (shapedirs (V, 3, S+E),
posedirs (V, 3, 36), J_regressor (5, V), weights (V, 5), faces (F, 3)) plus a landmark embedding,
so that the tests' reference implementations work from the file layout and never from flamejax
code paths. ``flame_model`` is the same data as a :class:`flamejax.FlameModel` (float32).

``tiny_world`` is the exception: the synthetic world (flamejax.synthetic.world) on a deliberately
small config, shared by every test file that needs a whole world (test_world, test_evaluate).
Building it is the most expensive fixture of the suite, so it is built once per test run: cached
on disk in the run's temporary folder, which pytest-xdist's workers share, under a file lock (the
first worker to need it builds it, the others wait for it and read it back).
"""

from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

N_VERTS = 80
N_FACES = 150
N_SHAPE = 12
N_EXPR = 8
N_JOINTS = 5
N_STATIC, N_CONTOUR, N_BINS, N_MEDIAPIPE = 51, 17, 79, 105


def _random_bary(rng, shape):
    b = rng.uniform(0.05, 1.0, size=shape + (3,))
    return b / b.sum(-1, keepdims=True)


def make_raw_flame(seed: int = 0, n_verts: int = N_VERTS, n_faces: int = N_FACES,
                   n_shape: int = N_SHAPE, n_expr: int = N_EXPR) -> dict:
    """A random FLAME-structured model as NumPy float64 arrays in FLAME's file layout."""
    rng = np.random.default_rng(seed)
    v_template = rng.normal(0.0, 0.08, size=(n_verts, 3))
    shapedirs = rng.normal(0.0, 0.004, size=(n_verts, 3, n_shape + n_expr))
    posedirs = rng.normal(0.0, 0.002, size=(n_verts, 3, 9 * (N_JOINTS - 1)))
    # Each joint regressed from a handful of vertices; rows sum to 1.
    j_regressor = np.zeros((N_JOINTS, n_verts))
    for j in range(N_JOINTS):
        ids = rng.choice(n_verts, size=6, replace=False)
        w = rng.uniform(0.1, 1.0, size=6)
        j_regressor[j, ids] = w / w.sum()
    weights = rng.dirichlet(np.full(N_JOINTS, 0.7), size=n_verts)
    faces = np.stack([rng.choice(n_verts, size=3, replace=False) for _ in range(n_faces)]).astype(np.int64)
    return dict(
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=posedirs,
        J_regressor=j_regressor,
        weights=weights,
        f=faces,
        n_shape=n_shape,
        static_faces=rng.integers(0, n_faces, size=N_STATIC),
        static_bary=_random_bary(rng, (N_STATIC,)),
        # Different faces per yaw bin, so that choosing the wrong bin is always visible.
        dynamic_faces=rng.integers(0, n_faces, size=(N_BINS, N_CONTOUR)),
        dynamic_bary=_random_bary(rng, (N_BINS, N_CONTOUR)),
        mediapipe_faces=rng.integers(0, n_faces, size=N_MEDIAPIPE),
        mediapipe_bary=_random_bary(rng, (N_MEDIAPIPE,)),
    )


def raw_to_model(raw: dict, dtype=jnp.float32, with_landmarks: bool = True, with_mediapipe: bool = True):
    """Build a FlameModel from the raw file-layout arrays (components-first layout inside)."""
    import flamejax as fj
    from flamejax.landmarks import LandmarkEmbedding

    emb = None
    if with_landmarks:
        emb = LandmarkEmbedding(
            static_faces=jnp.asarray(raw["static_faces"], jnp.int32),
            static_bary=jnp.asarray(raw["static_bary"], dtype),
            dynamic_faces=jnp.asarray(raw["dynamic_faces"], jnp.int32),
            dynamic_bary=jnp.asarray(raw["dynamic_bary"], dtype),
            mediapipe_faces=jnp.asarray(raw["mediapipe_faces"], jnp.int32) if with_mediapipe else None,
            mediapipe_bary=jnp.asarray(raw["mediapipe_bary"], dtype) if with_mediapipe else None,
        )
    return fj.FlameModel(
        v_template=jnp.asarray(raw["v_template"], dtype),
        shapedirs=jnp.asarray(np.transpose(raw["shapedirs"], (2, 0, 1)), dtype),
        posedirs=jnp.asarray(np.transpose(raw["posedirs"], (2, 0, 1)), dtype),
        j_regressor=jnp.asarray(raw["J_regressor"], dtype),
        weights=jnp.asarray(raw["weights"], dtype),
        faces=jnp.asarray(raw["f"], jnp.int32),
        landmarks=emb,
        n_shape=raw["n_shape"],
    )


@pytest.fixture(scope="session")
def raw_flame() -> dict:
    return make_raw_flame(seed=0)


@pytest.fixture(scope="session")
def flame_model(raw_flame):
    return raw_to_model(raw_flame, jnp.float32)


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test, restoring the previous setting afterwards."""
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)



def tiny_world_config():
    """The shared small world: tiny head, two performers, both trackers (OS1, OS2), every take
    (Simon-Says with holds of the default length; short ROM takes and pangram)."""
    from flamejax.synthetic.sequences import SequenceConfig
    from flamejax.synthetic.world import WorldConfig

    return WorldConfig(seed=1, size="tiny", n_performers=2,
                       sequences=SequenceConfig(ramp=0.2, rest=0.1, rom_singles=2, rom_pairs=1, text="Pack my box."))


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive lock on ``path`` held for the block (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """:func:`tiny_world_config`'s world, made once per test run and cached on disk like a real
    one (``load_or_make_world``); under pytest-xdist the cache lives in the folder all workers'
    temporary folders share, so only one worker builds it."""
    from flamejax.synthetic.world import load_or_make_world

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by this run's workers
    cache = root / "tiny_world_cache"
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".lock"):
        return load_or_make_world(tiny_world_config(), cache)
