"""Two simulated FLAME trackers: performer geometry -> parameters of the *generic* FLAME model.

    seq = track(world.model, geometry, global_pose, neck_pose, OS1, jax.random.PRNGKey(0))
    v = tracked_vertices(world.model, seq)          # (T, V, 3): what the tracker "saw"

Real trackers (metrical-tracker, SMIRK, EMOCA) explain each frame with the generic model's
expression coefficients and jaw pose; whatever the performer does outside that span, or
differently from the generic rig, ends up as a different mix of the same coefficients. We
simulate that honestly: a least-squares fit of the first ``n_expr`` expression coefficients and
the jaw axis-angle to the frame's vertices (head pose given, optionally perturbed), followed by
the tracker's *character*:

- :data:`OS1` (metrical-tracker-like, an optimiser with a temporal prior): all 100 coefficients,
  small white noise, mild temporal smoothing;
- :data:`OS2` (SMIRK/EMOCA-like per-frame regressor): 50 coefficients, shrinkage toward zero
  (regressors under-shoot extremes), frame-independent jitter, jaw opening clamped >= 0.

The fit: for fixed poses FLAME is affine in the expression coefficients (linear blend, linear
joint regression, skinning linear in both), so the expression block of a Gauss-Newton step is
exactly the ridge least-squares solution at the current jaw; the 3 jaw angles converge in a few
steps. A last closed-form expression solve at the final jaw finishes. vmapped over frames
in fixed-size chunks of frames, so one compilation serves every sequence length.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FixedIdentityFlame, FlameModel, bind_identity
from flamejax.gauss_newton import Grams, frame_vertices as _frame_vertices, make_grams, normal_equations
from flamejax.chunking import map_chunks, padded_length


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """A tracker's character (hashable: passed to jit as static).

    n_expr: expression coefficients it estimates (the rest of the output is zero).
    expr_noise, jaw_noise: std of white noise added to the fit (coefficient units, radians),
      before temporal smoothing (estimation noise an optimiser's temporal prior partly removes).
    smoothing: std (frames) of the zero-phase Gaussian temporal filter; 0 = none.
    shrinkage: fraction by which expression and jaw are pulled toward zero (0 = none).
    expr_jitter, jaw_jitter: std of per-frame noise added after smoothing (a regressor's
      frame-independent errors).
    clamp_jaw_open: jaw opening (axis-angle x) clamped to >= 0.
    pose_noise: std (radians) of the tracker's error on the given global/neck poses.
    n_steps: Gauss-Newton steps (4: coefficients within ~3e-3 of convergence, well under the
      noise; the jaw within 4e-6 rad). ridge: on the expression coefficients, m^2 per coefficient^2
      against the mean squared vertex error (tiny: only keeps unconstrained modes at zero).
    """

    n_expr: int = 100
    expr_noise: float = 0.0
    jaw_noise: float = 0.0
    smoothing: float = 0.0
    shrinkage: float = 0.0
    expr_jitter: float = 0.0
    jaw_jitter: float = 0.0
    clamp_jaw_open: bool = False
    pose_noise: float = 0.0
    n_steps: int = 4
    ridge: float = 1e-12


# Expression coefficients are ~N(0, 1) over a population (std-scaled PCA), so 0.02 is ~2% of a
# typical activation; 0.002 rad of jaw is ~0.1 degree. Smoothing sigma 1 frame is "mild" (30 fps).
OS1 = TrackerConfig(n_expr=100, expr_noise=0.02, jaw_noise=0.002, smoothing=1.0, pose_noise=0.0005)
# SMIRK/EMOCA regress 50 coefficients per frame: 15% shrinkage, 5% jitter, 0.005 rad jaw jitter.
# Pose noise (radians, on global and neck): ~0.05 mm (OS1) and ~0.2 mm (OS2) at the face.
OS2 = TrackerConfig(n_expr=50, shrinkage=0.15, expr_jitter=0.05, jaw_jitter=0.005,
                    clamp_jaw_open=True, pose_noise=0.002)


class TrackedSequence(NamedTuple):
    """One tracked sequence, T frames, generic-model parameters (axis-angle radians, metres).

    expression (T, E) with E the model's expression count (coefficients past the tracker's
    n_expr are zero); jaw_pose (T, 3); global_pose, neck_pose (T, 3) as the tracker estimated
    them; translation (T, 3); shape (S,) the identity used; residual (T,) RMS vertex distance
    (metres) between the tracked geometry and the input; fit_residual (T,) the same for the
    plain least-squares fit, before the tracker's character."""

    expression: jnp.ndarray
    jaw_pose: jnp.ndarray
    global_pose: jnp.ndarray
    neck_pose: jnp.ndarray
    translation: jnp.ndarray
    shape: jnp.ndarray
    residual: jnp.ndarray
    fit_residual: jnp.ndarray


def _rms(a, b):
    return jnp.sqrt(jnp.mean(jnp.sum((a - b) ** 2, axis=-1)))


def fit_frame(fixed: FixedIdentityFlame, vertices, global_pose, neck_pose, translation, *, n_expr: int,
              n_steps: int, ridge: float):
    """Least-squares fit of one frame: vertices (V, 3) metres -> expression (n_expr,), jaw
    axis-angle (3,). Gauss-Newton on mean_v |FLAME(psi, jaw) - v|^2 + ridge |psi|^2 from
    psi = 0, jaw = 0; Jacobi-scaled normal equations (the modes' scales span ~2 decades).
    The plain form (a per-frame jacfwd): the reference that :func:`_fit_frame_fast`, which the
    trackers use, is tested against."""
    n_v = vertices.shape[0]
    reg = jnp.concatenate([jnp.full((n_expr,), ridge), jnp.zeros((3,))]).astype(vertices.dtype)

    def residual(x):
        v = _frame_vertices(fixed, x[:n_expr], x[n_expr:], global_pose, neck_pose, translation)
        return ((v - vertices) / jnp.sqrt(n_v)).reshape(-1)

    def solve(x):
        r = residual(x)
        jac = jax.jacfwd(residual)(x)        # (3V, n_expr + 3): exact in psi (affine), linear in jaw
        h = jac.T @ jac + jnp.diag(reg)
        d = jnp.sqrt(jnp.maximum(jnp.diagonal(h), 1e-30))
        # Levenberg term on the jaw only, relative to its own scale: regular when no vertex moves.
        lev = jnp.zeros_like(reg).at[n_expr:].set(1e-9)
        hs = h / d[:, None] / d[None, :] + jnp.diag(lev)
        return x - jnp.linalg.solve(hs, (jac.T @ r + reg * x) / d) / d

    x, _ = jax.lax.scan(lambda x, _: (solve(x), None), jnp.zeros((n_expr + 3,), vertices.dtype), None,
                        length=n_steps)
    return x[:n_expr], x[n_expr:]


def _fit_frame_fast(fixed: FixedIdentityFlame, grams: Grams, vertices, global_pose, neck_pose, translation, *,
                    n_expr: int, n_steps: int, ridge: float):
    """:func:`fit_frame` with the same Gauss-Newton steps, the normal equations formed from
    per-model grams (:mod:`flamejax.gauss_newton`) instead of a per-frame Jacobian."""
    dtype = vertices.dtype
    reg = jnp.concatenate([jnp.full((n_expr,), ridge), jnp.zeros((3,))]).astype(dtype)
    lev = jnp.zeros_like(reg).at[n_expr:].set(1e-9)

    def solve(x):
        h, g, _ = normal_equations(fixed, grams, x[:n_expr], x[n_expr:], global_pose, neck_pose, translation,
                                   vertices)
        h = h + jnp.diag(reg)
        dd = jnp.sqrt(jnp.maximum(jnp.diagonal(h), 1e-30))
        hs = h / dd[:, None] / dd[None, :] + jnp.diag(lev)
        return x - jnp.linalg.solve(hs, (g + reg * x) / dd) / dd

    x, _ = jax.lax.scan(lambda x, _: (solve(x), None), jnp.zeros((n_expr + 3,), dtype), None, length=n_steps)
    return x[:n_expr], x[n_expr:]


def _gaussian_smooth(x, sigma: float):
    """Zero-phase Gaussian filter along axis 0 (frames), edges replicated. x (T, D)."""
    if sigma <= 0:
        return x
    half = max(1, int(round(3 * sigma)))
    k = jnp.exp(-0.5 * (jnp.arange(-half, half + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(x.dtype)
    padded = jnp.concatenate([jnp.repeat(x[:1], half, 0), x, jnp.repeat(x[-1:], half, 0)], 0)
    return jax.vmap(lambda col: jnp.convolve(col, k, mode="valid"), in_axes=1, out_axes=1)(padded)


def apply_character(expression, jaw, cfg: TrackerConfig, key, n_valid=None):
    """The tracker's character on fitted (T, n) expression and (T, 3) jaw: noise, smoothing,
    shrinkage, jitter, clamp (in that order). Returns the same shapes.

    n_valid (traced int or None): only the first ``n_valid`` frames are the sequence, the rest is
    padding (a length bucket, so that one compilation serves many lengths). The first n_valid
    output frames are then those of the unpadded call: the noise draws are per-element counters
    (a prefix of the padded draws is the unpadded draw) and the smoothing sees the sequence's last
    frame repeated past its end, as its edge replication does."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    expression = expression + cfg.expr_noise * jax.random.normal(k1, expression.shape, expression.dtype)
    jaw = jaw + cfg.jaw_noise * jax.random.normal(k2, jaw.shape, jaw.dtype)
    if n_valid is not None and cfg.smoothing > 0:
        last = jnp.minimum(jnp.arange(expression.shape[0]), n_valid - 1)
        expression, jaw = expression[last], jaw[last]
    expression, jaw = _gaussian_smooth(expression, cfg.smoothing), _gaussian_smooth(jaw, cfg.smoothing)
    expression, jaw = (1.0 - cfg.shrinkage) * expression, (1.0 - cfg.shrinkage) * jaw
    expression = expression + cfg.expr_jitter * jax.random.normal(k3, expression.shape, expression.dtype)
    jaw = jaw + cfg.jaw_jitter * jax.random.normal(k4, jaw.shape, jaw.dtype)
    if cfg.clamp_jaw_open:
        jaw = jaw.at[:, 0].set(jnp.maximum(jaw[:, 0], 0.0))
    return expression, jaw


@functools.partial(jax.jit, static_argnames=("n_expr", "n_steps", "ridge"))
def _fit_chunk(fixed, grams, geometry, global_pose, neck_pose, translation, *, n_expr: int, n_steps: int,
               ridge: float):
    """Fit a chunk of frames (C, V, 3) -> expression (C, n_expr), jaw (C, 3), fit RMS (C,)."""
    fit = functools.partial(_fit_frame_fast, fixed, grams, n_expr=n_expr, n_steps=n_steps, ridge=ridge)
    psi, jaw = jax.vmap(fit)(geometry, global_pose, neck_pose, translation)
    return psi, jaw, _chunk_residual(fixed, psi, jaw, geometry, global_pose, neck_pose, translation)


def _chunk_residual(fixed, psi, jaw, geometry, global_pose, neck_pose, translation):
    v = jax.vmap(lambda *a: _frame_vertices(fixed, *a))(psi, jaw, global_pose, neck_pose, translation)
    return jax.vmap(_rms)(v, geometry)


_residual_chunk = jax.jit(_chunk_residual)
_character = jax.jit(lambda e, j, k, n, cfg: apply_character(e, j, cfg, k, n), static_argnums=4)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def track(model: FlameModel, geometry, global_pose, neck_pose, cfg: TrackerConfig, rng, *,
          translation=None, shape=None, chunk: int = 256) -> TrackedSequence:
    """Track a sequence with the generic model.

    model: the generic FLAME model. geometry (T, V, 3) metres, the performer's meshes in world
    space. global_pose, neck_pose (T, 3) axis-angle: the known head pose (the tracker takes it,
    perturbed by ``cfg.pose_noise``). cfg: :data:`OS1`, :data:`OS2` or any TrackerConfig.
    rng: a jax PRNG key (noise is deterministic given it). translation (T, 3) or None (zeros).
    shape (<=S,) or None: the identity the tracker uses (as MICA's estimate would be).
    chunk: frames fitted per compiled call (memory ~ chunk x 12 V floats); every sequence length
    reuses the same compiled fit.
    """
    if cfg.n_expr > model.n_expr:
        raise ValueError(f"the tracker estimates {cfg.n_expr} coefficients, the model has {model.n_expr}")
    fixed = dataclasses.replace(bind_identity(model, shape), landmarks=None)
    dtype = fixed.dtype
    # Frames live on the host and are cut into chunks there; everything per-frame that JAX
    # computes runs at a padded length (a multiple of ``chunk``), so a world's many take lengths
    # share a handful of compilations. The valid frames are bit-for-bit those of unpadded calls.
    geometry = np.asarray(geometry, dtype)
    t = geometry.shape[0]
    if geometry.shape != (t, fixed.rest.shape[1], 3):
        raise ValueError(f"geometry must be (T, {fixed.rest.shape[1]}, 3), got {geometry.shape}")
    if t == 0:
        raise ValueError("map_chunks needs at least one frame")
    t_pad = padded_length(t, chunk)

    def pad(x):
        return np.concatenate([x, np.repeat(x[-1:], t_pad - len(x), 0)]) if len(x) < t_pad else x

    global_pose = np.broadcast_to(np.asarray(global_pose, dtype), (t, 3))
    neck_pose = np.broadcast_to(np.asarray(neck_pose, dtype), (t, 3))
    translation = (np.zeros((t, 3), dtype) if translation is None
                   else np.broadcast_to(np.asarray(translation, dtype), (t, 3)))
    k_pose, k_char = jax.random.split(rng)
    kg, kn = jax.random.split(k_pose)
    global_pose = np.asarray(jnp.asarray(pad(global_pose)) + cfg.pose_noise * _normal(kg, (t_pad, 3), dtype))[:t]
    neck_pose = np.asarray(jnp.asarray(pad(neck_pose)) + cfg.pose_noise * _normal(kn, (t_pad, 3), dtype))[:t]
    poses = (global_pose, neck_pose, translation)
    fit = functools.partial(_fit_chunk, fixed, make_grams(fixed, cfg.n_expr), n_expr=cfg.n_expr,
                            n_steps=cfg.n_steps, ridge=cfg.ridge)
    psi, jaw, fit_residual = map_chunks(fit, (geometry, *poses), chunk)
    psi, jaw = _character(pad(np.asarray(psi)), pad(np.asarray(jaw)), k_char, t, cfg)
    psi, jaw = np.asarray(psi)[:t], np.asarray(jaw)[:t]
    residual, = map_chunks(lambda *a: (_residual_chunk(fixed, *a),), (psi, jaw, geometry, *poses), chunk)
    expression = jnp.asarray(np.pad(psi, ((0, 0), (0, fixed.n_expr - cfg.n_expr))))
    shape = jnp.zeros((model.n_shape,), dtype) if shape is None else jnp.asarray(shape, dtype)
    return TrackedSequence(expression, jnp.asarray(jaw), jnp.asarray(global_pose), jnp.asarray(neck_pose),
                           jnp.asarray(translation), shape, residual, fit_residual)


def canonical_pose(seq: TrackedSequence) -> TrackedSequence:
    """The same tracked sequence in the canonical head pose (global and neck rotation and
    translation zero): what calibration and rig inversion compare geometry in."""
    zeros = jnp.zeros_like(jnp.asarray(seq.global_pose))
    return seq._replace(global_pose=zeros, neck_pose=zeros, translation=zeros)


_vertices_chunk = jax.jit(jax.vmap(_frame_vertices, in_axes=(None, 0, 0, 0, 0, 0)))


def tracked_vertices(model: FlameModel, seq: TrackedSequence, *, chunk: int = 256) -> jnp.ndarray:
    """(T, V, 3) metres: the generic model evaluated at the tracked parameters."""
    fixed = dataclasses.replace(bind_identity(model, seq.shape), landmarks=None)
    frames = (seq.expression, seq.jaw_pose, seq.global_pose, seq.neck_pose, seq.translation)
    vertices, = map_chunks(lambda *f: (_vertices_chunk(fixed, *f),), frames, chunk)
    return vertices
