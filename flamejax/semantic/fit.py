"""Fitting a semantic basis B from paired data: controls -> target geometry of one identity.

Input: for each control k, the target mesh at full activation (c = e_k), optional per-control
vertex weights (region masks), and optional extra (controls, geometry) pairs (combinations such
as jaw open + lips together). Output: a :class:`~flamejax.semantic.rig.SemanticRig` whose column k
(n_expr expression coefficients, then 3 jaw Euler angles) reproduces target k, and the per-control
fit residual (weighted RMS vertex error, metres).

Why this split of the work: for a *fixed* jaw rotation the FLAME mesh is affine in the
expression coefficients (the blend is linear, the joints are regressed linearly from it, and
skinning is linear in the posed rest mesh and joints). So each control's column is a small
nonlinear least-squares problem in 3 jaw angles plus a linear one in the expression. We solve
it jointly by Gauss-Newton with the (n_expr + 3)-square normal equations formed densely and
solved with ``jnp.linalg.solve``: the expression part of each step is exactly the ridge
least-squares solution at the current jaw, and the jaw converges quadratically. Controls are
independent, so this runs vmapped over K.

Combination pairs couple the columns (theta = B c + g for a mixed c); when given, the
per-control solution is refined jointly over the whole of B by Gauss-Newton whose
(P K)-square normal matrix is applied matrix-free from per-sample (P, P) Gram matrices
(preconditioned CG), so no (samples x 3V) x (P x K) Jacobian is ever formed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from flamejax.flame import FixedIdentityFlame, FlameParams, flame_forward_fixed
from flamejax.semantic.rig import JAW_CONVENTIONS, SemanticRig, make_rig, theta_to_parameters


class SemanticFit(NamedTuple):
    """rig: the fitted rig (P = n_expr + 3 rows, no neck); residual (K,): weighted RMS vertex
    error (metres) of each control's full-activation target; pair_residual (M,) the same for the
    combination pairs, or None when none were given."""

    rig: SemanticRig
    residual: jnp.ndarray
    pair_residual: Optional[jnp.ndarray] = None


def _theta_vertices(fixed: FixedIdentityFlame, theta: jnp.ndarray, jaw_convention: str) -> jnp.ndarray:
    """theta (n_expr + 3,) -> vertices (V, 3) of the bound identity."""
    expression, jaw, _ = theta_to_parameters(theta, fixed.n_expr, jaw_convention)
    return flame_forward_fixed(fixed, FlameParams(expression=expression, jaw_pose=jaw)).vertices


def _normalised(weights: jnp.ndarray) -> jnp.ndarray:
    """(..., V) vertex weights -> the same divided by their sum, so that squared errors
    weighted by them are a mean over the selected vertices (ridge independent of mesh size)."""
    return weights / jnp.maximum(jnp.sum(weights, axis=-1, keepdims=True), 1e-30)


def _weighted_rms(vertices, target, weights):
    """(V, 3), (V, 3), (V,) -> sqrt(sum_v w_v |v - t|^2 / sum_v w_v) in metres."""
    return jnp.sqrt(jnp.sum(_normalised(weights) * jnp.sum((vertices - target) ** 2, axis=-1)))


def _fit_column(fixed: FixedIdentityFlame, target, weights, offset, init, *, jaw_convention: str,
                ridge: float, n_steps: int):
    """One control: target (V, 3), weights (V,), offset g (P,), init column (P,) ->
    (column (P,), weighted RMS residual). Minimises
    sum_v w~_v |R(b + g)_v - t_v|^2 + ridge |b_expr|^2 by Gauss-Newton (w~ = normalised weights).
    """
    n_expr = fixed.n_expr
    sqrt_w = jnp.sqrt(_normalised(weights))[:, None]
    reg = jnp.concatenate([jnp.full((n_expr,), ridge), jnp.zeros((3,))]).astype(offset.dtype)

    def residual(b):
        return (sqrt_w * (_theta_vertices(fixed, b + offset, jaw_convention) - target)).reshape(-1)

    def step(b, _):
        r = residual(b)
        jac = jax.jacfwd(residual)(b)  # (3V, P); P forward passes, cheap next to 3V rows
        h = jac.T @ jac + jnp.diag(reg)
        # Levenberg term, relative to the jaw block's own scale: keeps the solve regular for a
        # control whose target moves no jaw-driven vertex, and is negligible otherwise.
        jaw_scale = jnp.trace(h[n_expr:, n_expr:]) / 3.0
        h = h + jnp.diag(jnp.zeros_like(reg).at[n_expr:].set(1e-9 * jaw_scale + 1e-30))
        grad = jac.T @ r + reg * b
        return b - jnp.linalg.solve(h, grad), None

    b, _ = jax.lax.scan(step, init, None, length=n_steps)
    return b, _weighted_rms(_theta_vertices(fixed, b + offset, jaw_convention), target, weights)


def _gram(fixed, theta, target, weights, jaw_convention):
    """One sample: theta (P,), target (V, 3), weights (V,) -> Gauss-Newton pieces in theta:
    J^T J (P, P) and J^T r (P,) of the weighted residual r = sqrt(w~) (R(theta) - t)."""
    sqrt_w = jnp.sqrt(_normalised(weights))[:, None]

    def residual(th):
        return (sqrt_w * (_theta_vertices(fixed, th, jaw_convention) - target)).reshape(-1)

    jac = jax.jacfwd(residual)(theta)
    return jac.T @ jac, jac.T @ residual(theta)


def _refine_joint(fixed, basis, offset, controls, targets, weights, *, jaw_convention: str,
                  ridge, n_steps: int, cg_iters: int, batch_size):
    """All samples at once: controls (N, K), targets (N, V, 3), weights (N, V) -> basis (P, K).

    Gauss-Newton on sum_n sum_v w~_nv |R(B c_n + g)_v - t_nv|^2 + ridge |B_expr|^2. Sample n
    sees B only through theta_n = B c_n + g, so the (P K)-square normal matrix is
    sum_n (c_n c_n^T) kron (J_n^T J_n): we keep the N small (P, P) Gram matrices and apply it
    matrix-free inside Jacobi-preconditioned CG (the jaw and expression entries differ in scale
    by orders of magnitude, which plain CG handles badly).
    """
    n_expr = fixed.n_expr
    reg = jnp.zeros((basis.shape[0], 1), basis.dtype).at[:n_expr].set(ridge)
    gram = functools.partial(_gram, fixed, jaw_convention=jaw_convention)

    def step(b, _):
        thetas = controls @ b.T + offset
        if batch_size is None:
            g, gr = jax.vmap(gram)(thetas, targets, weights)
        else:
            g, gr = jax.lax.map(lambda a: gram(*a), (thetas, targets, weights), batch_size=batch_size)
        diag = jnp.einsum("npp,nk->pk", g, controls ** 2) + reg
        # Tiny Levenberg term: directions no sample constrains (the jaw of a control whose
        # targets move no jaw-driven vertex) stay put instead of making the system singular.
        damp = 1e-9 * jnp.max(diag, axis=0, keepdims=True) + 1e-30

        def normal(x):
            return jnp.einsum("npq,nq,nk->pk", g, controls @ x.T, controls) + (reg + damp) * x

        rhs = -(jnp.einsum("np,nk->pk", gr, controls) + reg * b)
        delta, _ = jax.scipy.sparse.linalg.cg(normal, rhs, maxiter=cg_iters,
                                              M=lambda x: x / (diag + damp))
        return b + delta, None

    basis, _ = jax.lax.scan(step, basis, None, length=n_steps)
    return basis


@functools.partial(jax.jit, static_argnames=("jaw_convention", "n_steps", "refine_steps", "cg_iters",
                                             "batch_size"))
def _fit(fixed, targets, weights, offset, init, pair_controls, pair_targets, pair_weights, ridge, *,
         jaw_convention, n_steps, refine_steps, cg_iters, batch_size):
    column = functools.partial(_fit_column, fixed, offset=offset, jaw_convention=jaw_convention,
                               ridge=ridge, n_steps=n_steps)
    per_control = lambda t, w, i: column(t, w, init=i)  # noqa: E731
    if batch_size is None:
        cols, residual = jax.vmap(per_control)(targets, weights, init.T)
    else:
        # Bounded memory for large K on a full-size mesh: vmap over chunks of controls.
        cols, residual = jax.lax.map(lambda a: per_control(*a), (targets, weights, init.T),
                                     batch_size=batch_size)
    basis = cols.T
    pair_residual = None
    if pair_controls is not None:
        k = basis.shape[1]
        controls = jnp.concatenate([jnp.eye(k, dtype=basis.dtype), pair_controls], axis=0)
        all_targets = jnp.concatenate([targets, pair_targets], axis=0)
        all_weights = jnp.concatenate([weights, pair_weights], axis=0)
        basis = _refine_joint(fixed, basis, offset, controls, all_targets, all_weights,
                              jaw_convention=jaw_convention, ridge=ridge, n_steps=refine_steps,
                              cg_iters=cg_iters, batch_size=batch_size)
        frames = jax.vmap(_theta_vertices, in_axes=(None, 0, None))
        v = frames(fixed, controls @ basis.T + offset, jaw_convention)
        rms = jax.vmap(_weighted_rms)(v, all_targets, all_weights)
        residual, pair_residual = rms[:k], rms[k:]
    return basis, residual, pair_residual


def fit_semantic_rig(fixed: FixedIdentityFlame, targets: jnp.ndarray, *,
                     masks: Optional[jnp.ndarray] = None,
                     offset: Optional[jnp.ndarray] = None,
                     pairs: Optional[tuple[jnp.ndarray, jnp.ndarray]] = None,
                     pair_masks: Optional[jnp.ndarray] = None,
                     init: Optional[SemanticRig] = None,
                     jaw_convention: str = "face_calibration",
                     ridge: float = 1e-12,
                     n_steps: int = 8,
                     refine_steps: int = 4,
                     cg_iters: int = 200,
                     batch_size: Optional[int] = None,
                     controls: tuple[str, ...] = ()) -> SemanticFit:
    """Fit a semantic basis B (n_expr + 3, K) to per-control targets of one bound identity.

    fixed: the identity (``bind_identity(model, shape)``); its ``n_expr`` is the rig's.
    targets (K, V, 3): the mesh (metres) with control k fully on and all others off.
    masks (K, V): per-control vertex weights (bool or [0, 1]; e.g. a region mask), or None for
    all vertices. Errors are weighted means over vertices, so ``ridge`` (on the expression
    coefficients, units m^2 per coefficient^2) does not depend on the mesh size.
    offset (P,): g, theta at c = 0 (default zeros); it is kept, not fitted.
    pairs: optional (controls (M, K), geometry (M, V, 3)) combination samples, with pair_masks
    (M, V); they are fitted jointly with the per-control targets over all of B
    (``refine_steps`` Gauss-Newton steps, ``cg_iters`` CG iterations each).
    init: a rig to start from (its basis is the initial guess; default zeros: jaw closed).
    n_steps: Gauss-Newton steps per control. batch_size: vmap the controls in chunks of this
    size (bounded memory) instead of all at once.
    controls: the K control names, stored on the rig.

    Returns :class:`SemanticFit` (rig with ``jaw_convention``, residual (K,) RMS metres, pair_residual).
    """
    if jaw_convention not in JAW_CONVENTIONS:
        raise ValueError(f"jaw_convention must be one of {JAW_CONVENTIONS}, got {jaw_convention!r}")
    dtype = fixed.dtype
    # Landmarks are not fitted: dropping them keeps them out of every traced forward pass.
    fixed = dataclasses.replace(fixed, landmarks=None)
    targets = jnp.asarray(targets, dtype)
    k, n_v = targets.shape[0], targets.shape[1]
    p = fixed.n_expr + 3
    if targets.shape != (k, fixed.rest.shape[1], 3):
        raise ValueError(f"targets must be (K, {fixed.rest.shape[1]}, 3), got {targets.shape}")
    weights = jnp.ones((k, n_v), dtype) if masks is None else jnp.asarray(masks, dtype)
    if weights.shape != (k, n_v):
        raise ValueError(f"masks must be (K, V) = {(k, n_v)}, got {weights.shape}")
    offset = jnp.zeros((p,), dtype) if offset is None else jnp.asarray(offset, dtype)
    if offset.shape != (p,):
        raise ValueError(f"offset must be ({p},) (n_expr + 3, no neck), got {offset.shape}")
    if init is None:
        init_basis = jnp.zeros((p, k), dtype)
    else:
        if init.has_neck or init.basis.shape != (p, k):
            raise ValueError(f"init rig must have basis ({p}, {k}) and no neck")
        init_basis = jnp.asarray(init.basis, dtype)
    pair_controls = pair_targets = pair_weights = None
    if pairs is not None:
        pair_controls = jnp.asarray(pairs[0], dtype)
        pair_targets = jnp.asarray(pairs[1], dtype)
        m = pair_controls.shape[0]
        if pair_controls.shape != (m, k) or pair_targets.shape != (m, n_v, 3):
            raise ValueError(f"pairs must be (controls (M, {k}), geometry (M, {n_v}, 3)), got "
                             f"{pair_controls.shape}, {pair_targets.shape}")
        pair_weights = (jnp.ones((m, n_v), dtype) if pair_masks is None
                        else jnp.asarray(pair_masks, dtype))
        if pair_weights.shape != (m, n_v):
            raise ValueError(f"pair_masks must be (M, V) = {(m, n_v)}, got {pair_weights.shape}")
    basis, residual, pair_residual = _fit(
        fixed, targets, weights, offset, init_basis, pair_controls, pair_targets, pair_weights,
        jnp.asarray(ridge, dtype), jaw_convention=jaw_convention, n_steps=n_steps,
        refine_steps=refine_steps, cg_iters=cg_iters, batch_size=batch_size)
    rig = make_rig(basis, offset, n_expr=fixed.n_expr, jaw_convention=jaw_convention,
                   controls=controls)
    return SemanticFit(rig, residual, pair_residual)
