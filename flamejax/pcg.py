"""Preconditioned conjugate gradients on pytrees, for convex quadratics f(x) = f0 - b.x + 1/2 x.Hx.

    x, state = minimize_quadratic(hvp, b, f0, precondition, maxiter=100, tol=1e-4)
    state.iter_num, state.value, state.error, state.history

The residual r = b - Hx is minus f's gradient, so stopping at |r| <= tol is the same rule as a
gradient-norm stopping rule of an optimiser on f. f after each iteration comes from quantities CG
has anyway (f(x) = f0 - (b.x + r.x)/2), so the history costs no extra products with H.
Jit- and vmap-compatible; ``hvp`` and ``precondition`` may close over tracers.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class QuadraticState(NamedTuple):
    """iter_num () CG iterations run; value () f at the solution; error () |b - Hx| (f's gradient
    norm) at the solution; history (maxiter + 1,) f after i iterations (entry 0: x = 0), NaN past
    iter_num."""

    iter_num: jnp.ndarray
    value: jnp.ndarray
    error: jnp.ndarray
    history: jnp.ndarray


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _axpy(alpha, x, y):
    return jax.tree_util.tree_map(lambda u, v: alpha * u + v, x, y)


def minimize_quadratic(hvp: Callable, b, f0, precondition: Callable, *, maxiter: int, tol):
    """Minimise f(x) = f0 - b.x + x.H x / 2 from x = 0 (H symmetric positive definite, given by
    ``hvp(x) = Hx``; ``precondition(r)`` ~ H^-1 r, symmetric positive definite): at most
    ``maxiter`` (static) iterations, stopping when |b - Hx| <= tol. -> (x, :class:`QuadraticState`)."""
    x = jax.tree_util.tree_map(jnp.zeros_like, b)
    z = precondition(b)
    rz = _dot(b, z)
    f0 = jnp.asarray(f0, rz.dtype)
    history = jnp.full((maxiter + 1,), jnp.nan, rz.dtype).at[0].set(f0)

    def cond(carry):
        _, r, _, _, it, _ = carry
        return (it < maxiter) & (jnp.sqrt(_dot(r, r)) > tol)

    def body(carry):
        x, r, p, rz, it, hist = carry
        hp = hvp(p)
        alpha = rz / _dot(p, hp)
        x, r = _axpy(alpha, p, x), _axpy(-alpha, hp, r)
        z = precondition(r)
        rz_new = _dot(r, z)
        p = _axpy(rz_new / rz, p, z)
        it = it + 1
        value = f0 - 0.5 * (_dot(b, x) + _dot(r, x))
        return x, r, p, rz_new, it, hist.at[it].set(value)

    x, _, _, _, it, history = jax.lax.while_loop(cond, body, (x, b, z, rz, jnp.asarray(0), history))
    # the recursively updated residual drifts in float32: report the true one
    r = _axpy(-1.0, hvp(x), b)
    value = f0 - 0.5 * (_dot(b, x) + _dot(r, x))
    return x, QuadraticState(it, value, jnp.sqrt(_dot(r, r)), history.at[it].set(value))
