"""The slot pool (flamejax.pooled) gives each item exactly its own while_loop's result, whatever the
width, padding and order in which items finish; rig inversion through it equals the vmapped solver."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.pooled import solve_pooled
from flamejax.semantic.controls import load_control_set
from flamejax.synthetic.semantic_model import make_generic_semantic_model
from flamejax.track import (InversionConfig, InversionWeights, _solve_frames, _solve_pooled, inversion_problem,
                            rig_geometry, track_controls)


def _newton_sqrt(a, tol):
    """Reference: Newton's iteration for sqrt(a) from x = a, one item at a time, in NumPy."""
    x, it = a, 0
    while True:
        x_new = 0.5 * (x + a / x)
        it += 1
        if abs(x_new - x) <= tol * x_new or it >= 50:
            return x_new, it
        x = x_new


@pytest.mark.parametrize("width", [1, 3, 8, 64])
def test_each_item_gets_its_own_loop(width):
    a = np.geomspace(1e-3, 1e6, 40)              # 2 to ~25 iterations: items finish out of order
    items = dict(a=jnp.asarray(np.concatenate([a, np.full(9, -1.0)])))   # 9 padding items: never used
    start = lambda item: (item["a"], jnp.asarray(0))  # noqa: E731

    def step(item, carry):
        x, it = carry
        x_new = 0.5 * (x + item["a"] / x)
        return (x_new, it + 1), (jnp.abs(x_new - x) <= 1e-6 * x_new) | (it + 1 >= 50)

    x, it = jax.jit(lambda items: solve_pooled(start, step, items, 40, width))(items)
    want = [_newton_sqrt(v, 1e-6) for v in np.asarray(a, np.float32)]
    np.testing.assert_array_equal(np.asarray(it[:40]), [w[1] for w in want])
    np.testing.assert_allclose(np.asarray(x[:40]), [w[0] for w in want], rtol=1e-6)
    assert np.all(np.asarray(it[40:]) == 0) and np.all(np.asarray(x[40:]) == 0)   # padding untouched
    assert len(set(np.asarray(it[:40]))) > 5


def test_no_items_and_traced_count():
    start = lambda item: jnp.zeros_like(item)  # noqa: E731
    step = lambda item, c: (c + 1, c + 1 >= item)  # noqa: E731
    run = jax.jit(lambda n: solve_pooled(start, step, jnp.arange(6), n, 4))
    np.testing.assert_array_equal(np.asarray(run(0)), np.zeros(6))
    np.testing.assert_array_equal(np.asarray(run(6)), [1, 1, 2, 3, 4, 5])   # item 0 takes one step


def test_rig_inversion_through_the_pool_equals_the_vmapped_solver(x64):
    """float64, so that batching's rounding differences (float32: ~1e-3 in the rig's flat valleys)
    cannot hide a bookkeeping error: every frame must match to 1e-9."""
    cs = load_control_set("metahuman")
    gen = make_generic_semantic_model(0, "tiny", cs.names)
    rig = dataclasses.replace(gen.rig, basis=jnp.asarray(gen.rig.basis, jnp.float64),
                              offset=jnp.asarray(gen.rig.offset, jnp.float64))
    problem = inversion_problem(gen.model.astype(jnp.float64), rig, tweakers=cs.tweaker_mask)
    rng = np.random.default_rng(3)
    t, n = 37, 48                                                         # 11 frames of padding
    c = np.clip(cs.simon_says.targets[np.arange(t) % 20] * rng.uniform(0.2, 1.0, (t, 1)), 0, 1)
    y = jax.vmap(lambda x: rig_geometry(problem, x))(jnp.asarray(c))
    y = np.asarray(y + 2e-4 * jax.random.normal(jax.random.key(1), y.shape))
    w = InversionWeights(l1=1e-3, tweaker=1e-2)
    cfg = InversionConfig()
    zeros = jnp.zeros((t, cs.size))
    want_c, want = jax.jit(lambda y: _solve_frames(problem, y, zeros, zeros, jnp.zeros(t), w, cfg=cfg))(y)
    pad = lambda x: jnp.concatenate([x, jnp.zeros((n - t,) + x.shape[1:], x.dtype)])  # noqa: E731
    got_c, got = jax.jit(lambda y: _solve_pooled(problem, pad(y), pad(zeros), pad(zeros), jnp.zeros(n), t, w,
                                                 cfg=cfg, width=5))(jnp.asarray(y))
    assert len(set(np.asarray(want.iter_num))) > 1                        # frames finish at different times
    np.testing.assert_array_equal(np.asarray(got.iter_num[:t]), np.asarray(want.iter_num))
    np.testing.assert_allclose(np.asarray(got_c[:t]), np.asarray(want_c), atol=1e-9)
    np.testing.assert_allclose(np.asarray(got.value[:t]), np.asarray(want.value), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got.residual[:t]), np.asarray(want.residual), rtol=1e-9)
    assert np.all(np.asarray(got.iter_num[t:]) == 0)
    # the public entry point: chunks smaller than the sequence, a pool narrower than a chunk
    tc, ts = track_controls(problem, y, w, block=4, chunk=16)
    np.testing.assert_allclose(np.asarray(tc), np.asarray(want_c), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(ts.iter_num), np.asarray(want.iter_num))
