"""Monotone L-BFGS: jaxopt's L-BFGS steps inside one ``lax.while_loop`` that never accepts a step
which does not decrease the objective. Used by Simon-Says calibration (fine-tuning runs its
stages on the host instead: see :mod:`flamejax.finetune`).

    z, state = minimize_lbfgs(f, z0, maxiter=100, tol=1e-4)
    state.iter_num, state.value, state.error, state.history, state.stalled

Why not ``jaxopt.LBFGS.run``: jaxopt takes its step even when the line search fails. Here a step
that does not decrease f is rejected and the L-BFGS memory cleared (a restart along -grad); a
second failure in a row ends the run at the last good iterate (in float32 the usual way to stop
once f is converged to its resolution). Jit-, vmap-compatible; ``f`` may close over tracers.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jaxopt


class DescentState(NamedTuple):
    """iter_num () iterations run; value () final objective; error () final gradient norm;
    history (maxiter + 1,) objective after i iterations (entry 0: at z0), NaN past iter_num;
    stalled () True when the run ended on two failed steps in a row."""

    iter_num: jnp.ndarray
    value: jnp.ndarray
    error: jnp.ndarray
    history: jnp.ndarray
    stalled: jnp.ndarray


def minimize_lbfgs(fun: Callable, z0, *, maxiter: int, tol, history_size: int = 10,
                   linesearch: str = "zoom"):
    """Minimise ``fun`` (a pytree -> scalar) from ``z0``: at most ``maxiter`` (static) iterations,
    stopping when the gradient norm is below ``tol``. -> (z, :class:`DescentState`)."""
    # The stopping rule is ours (cond below): jaxopt's own maxiter/tol only govern its run().
    solver = jaxopt.LBFGS(fun=fun, maxiter=maxiter, history_size=history_size, linesearch=linesearch)
    state = solver.init_state(z0)
    history = jnp.full((maxiter + 1,), jnp.nan, state.value.dtype).at[0].set(state.value)

    # while_loop, not scan: a converged problem stops (under vmap it idles until all stop).
    def cond(carry):
        _, st, _, fails = carry
        return (st.iter_num < maxiter) & (st.error > tol) & (fails < 2)

    def body(carry):
        z, st, hist, fails = carry
        new_z, new_st = solver.update(z, st)
        ok = new_st.value < st.value
        restart = st._replace(s_history=jax.tree_util.tree_map(jnp.zeros_like, st.s_history),
                              y_history=jax.tree_util.tree_map(jnp.zeros_like, st.y_history),
                              rho_history=jnp.zeros_like(st.rho_history), gamma=jnp.ones_like(st.gamma))
        z, st = jax.tree_util.tree_map(lambda old, new: jnp.where(ok, new, old), (z, restart), (new_z, new_st))
        return z, st, hist.at[st.iter_num].set(st.value), jnp.where(ok, 0, fails + 1)

    z, state, history, fails = jax.lax.while_loop(cond, body, (z0, state, history, jnp.asarray(0)))
    return z, DescentState(state.iter_num, state.value, state.error, history, fails >= 2)
