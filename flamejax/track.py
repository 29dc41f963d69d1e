"""Tracking = rig inversion: per frame, the controls c in [0, 1]^K whose rig geometry is the frame's.

    problem = inversion_problem(model, rig, shape=beta, tweakers=cs.tweaker_mask)
    controls, state = track_controls(problem, targets, InversionWeights(l1=1e-3, tweaker=1e-2))
    # targets (T, V, 3) metres, canonical head pose -> controls (T, K), state.value/iter_num/... (T,)

    problem = inversion_problem(model, rig, shape=beta, tweakers=cs.tweaker_mask, landmarks_only=True)
    controls, state = track_controls(problem, landmarks, weights)      # landmarks (T, 68, 3) metres

Objective of one frame (geometry in mm^2, so the weights read in human units):

    f(c) = 1e6 * sum_v m_v |R(c)_v - y_v|^2 / sum_v m_v  +  l1 * sum_k c_k  +  tweaker * sum_{k in tweakers} c_k
           + smoothness * (|c - c_prev|^2 + |c - c_next|^2)          subject to 0 <= c <= 1

with R(c) = FLAME(beta, theta = B c + g) (flamejax.semantic.rig) and m_v vertex weights (a mask).
Rig inversion is underdetermined (B is 103 x 122: 19 directions of c change nothing), so the
bounds, the L1 term and the tweaker penalty choose among control vectors with the same geometry;
report control error and geometry error separately.

Landmark-only mode (``landmarks_only=True``): the targets are the L = 68 iBUG landmarks (L, 3) in
metres, canonical head pose (so the frontal contour bin), and the geometry term is
1e6 * mean_l |lmk_l(R(c)) - y_l|^2 (mm^2 again), lmk_l the model's barycentric landmark embedding
(:func:`flamejax.landmarks.ibug68`, the landmarks of :func:`flamejax.flame.flame_forward_fixed`).
:func:`rig_geometry` is the mesh in both modes; :func:`rig_points` is what the objective compares
(the mesh, or the (L, 3) landmarks).

Solver (:class:`RigInversion`, jaxopt-shaped: ``run(init, problem, target) -> (params, state)``):
projected Gauss-Newton. The rig is affine in the expression coefficients and nonlinear only through
the jaw rotation, so each iteration forms FLAME's (n + 3)-square normal equations from per-model
grams (:mod:`flamejax.gauss_newton`, no per-frame Jacobian), maps them to the K-sized quadratic model
through B (and the Euler -> axis-angle Jacobian of the jaw), solves that bounded, L1-penalised
quadratic program by ADMM in K dimensions, and takes the best of a few step lengths along the
result (exact objective). All iterations are ``lax.while_loop``s; frames are vmapped, long
sequences through a pool of slots (:mod:`flamejax.pooled`: a frame that has converged hands its
slot to the next, so nobody waits for the slowest frame); the penalty weights are a pytree
(:class:`InversionWeights`) so a grid of them is vmapped too.

In landmark-only mode the grams do not apply: a landmark mixes three vertices, so the objective is
not a sum over vertices with a diagonal weight. The normal equations come instead from a dense
per-frame Jacobian J (3L x (n + 3)) of the landmarks in (psi, jaw axis-angle), by forward mode
(``jax.jacfwd``) on a *sub-mesh*: the bound identity restricted to the <= 3L vertices of the
landmarks' faces (rest, blend directions and skinning weights sliced; the full model's joint
regression kept, so the joints and hence the landmarks are exact). That costs a few hundred
vertices per tangent, and h = J^T J / L, g = J^T r / L enter the K-sized model exactly as the
vertex mode's. The line search evaluates the landmarks on the same sub-mesh.

Temporal smoothness couples neighbouring frames. It is solved by block-Jacobi sweeps, each one a
vmapped solve of every frame with its neighbours held at the previous sweep's values (zero-phase,
and still parallel over frames); the first solve is without the coupling.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flamejax import landmarks as lmk
from flamejax.flame import FixedIdentityFlame, FlameModel, bind_identity
from flamejax.gauss_newton import Grams, frame_vertices, make_grams, normal_equations
from flamejax.pooled import solve_pooled
from flamejax.semantic.rig import SemanticRig, euler_to_axis_angle

MM2 = 1e6  # m^2 -> mm^2: the geometry term is in mm^2


class InversionWeights(NamedTuple):
    """The objective's weights (scalars or 0-d arrays; a pytree, so grids of them vmap).
    l1: per unit of control (mm^2); tweaker: extra per unit of tweaker control (mm^2);
    smoothness: per squared control difference to each neighbouring frame (mm^2)."""

    l1: float = 1e-3
    tweaker: float = 1e-2
    smoothness: float = 0.0


@dataclasses.dataclass(frozen=True)
class InversionConfig:
    """Static solver settings. maxiter: Gauss-Newton iterations per frame; qp_iters: FISTA
    iterations (ADMM) of each bounded quadratic subproblem; tol: stop when the objective decreases by
    less than ``tol`` (relative) and no control moves by more than ``xtol``; rtol: also stop when an
    iteration lowers the objective by less than ``rtol`` times its value (in the rig's flat valleys
    Gauss-Newton otherwise creeps on for up to ~10 more iterations, each gaining ~1e-6 relative,
    and a vmapped block waits for its slowest frame; 0 disables the rule); damping: Marquardt
    term, relative to each control's curvature, keeping the K-square model positive definite
    along the 19+ null directions of B (progress along them comes from the penalties); sweeps: block-Jacobi sweeps for the temporal term (0 = ignore smoothness)."""

    maxiter: int = 20
    qp_iters: int = 100
    tol: float = 1e-7
    xtol: float = 1e-4
    rtol: float = 1e-5
    damping: float = 1e-4
    sweeps: int = 3


class LandmarkSubmesh(NamedTuple):
    """Landmark-only mode's model (module docstring): ``fixed`` the bound identity restricted to the
    vertices of the landmarks' faces (rest, blenddirs, weights sliced; j_rest and j_exprdirs of the
    full model), whose ``faces`` (L, 3) are the landmarks' faces in sub-mesh vertex ids, landmark l
    on face l; bary (L, 3) the barycentric weights; vertices (S,) int32 the full-mesh ids of the
    sub-mesh's vertices."""

    fixed: FixedIdentityFlame
    bary: jnp.ndarray
    vertices: jnp.ndarray


class InversionProblem(NamedTuple):
    """Everything per rig and identity (built once by :func:`inversion_problem`): the bound identity,
    its grams (with the vertex weights; None in landmark-only mode), the rig, tweakers (K,) as 0/1
    floats, and landmarks: the landmark sub-mesh in landmark-only mode, None in vertex mode."""

    fixed: FixedIdentityFlame
    grams: Optional[Grams]
    rig: SemanticRig
    tweakers: jnp.ndarray
    landmarks: Optional[LandmarkSubmesh] = None


class InversionState(NamedTuple):
    """Per frame: iter_num (Gauss-Newton iterations), value (objective at the solution), error (the
    last step's largest control change), converged, residual (RMS distance, metres, of what the
    objective compares: weighted vertices, or landmarks in landmark-only mode)."""

    iter_num: jnp.ndarray
    value: jnp.ndarray
    error: jnp.ndarray
    converged: jnp.ndarray
    residual: jnp.ndarray


def inversion_problem(model: FlameModel, rig: SemanticRig, shape: Optional[jnp.ndarray] = None, *,
                      tweakers=None, vertex_weights=None, exprdirs=None,
                      landmarks_only: bool = False) -> InversionProblem:
    """Build the per-rig constants (outside jit: the grams read which joints matter).

    model: FLAME (its expression basis, or ``exprdirs`` (E, V, 3) instead: a calibrated rig);
    rig: the semantic rig (no neck); shape (<=S,): the identity; tweakers: (K,) bool or None
    (no tweaker penalty); vertex_weights: (V,) >= 0 or None (all vertices, equally);
    landmarks_only: compare the 68 iBUG landmarks (the model's landmark embedding, canonical head
    pose) instead of the mesh; the targets are then (T, 68, 3) (module docstring)."""
    if rig.has_neck:
        raise ValueError("rig inversion works in the canonical head pose: use a rig without neck rows")
    if landmarks_only and vertex_weights is not None:
        raise ValueError("vertex_weights and landmarks_only exclude each other: landmark-only tracking "
                         "weighs the landmarks equally")
    if landmarks_only and model.landmarks is None:
        raise ValueError("landmarks_only=True needs a model with a landmark embedding (model.landmarks is None)")
    if exprdirs is not None:
        model = model.with_exprdirs(exprdirs)
    if rig.n_expr > model.n_expr:
        raise ValueError(f"the rig drives {rig.n_expr} expression coefficients, the model has {model.n_expr}")
    fixed = dataclasses.replace(bind_identity(model, shape), landmarks=None)
    k = rig.n_controls
    tw = np.zeros(k) if tweakers is None else np.asarray(tweakers, float)
    if tw.shape != (k,):
        raise ValueError(f"tweakers must be ({k},), got {tw.shape}")
    tw = jnp.asarray(tw, fixed.dtype)
    if landmarks_only:
        return InversionProblem(fixed, None, rig, tw, landmark_submesh(fixed, model.landmarks))
    if vertex_weights is not None:
        vertex_weights = jnp.asarray(vertex_weights, fixed.dtype)
        if vertex_weights.shape != (fixed.rest.shape[1],):
            raise ValueError(f"vertex_weights must be ({fixed.rest.shape[1]},), got {vertex_weights.shape}")
    return InversionProblem(fixed, make_grams(fixed, rig.n_expr, vertex_weights), rig, tw)


def landmark_submesh(fixed: FixedIdentityFlame, embedding: lmk.LandmarkEmbedding) -> LandmarkSubmesh:
    """The sub-mesh carrying the 68 iBUG landmarks in the canonical head pose (concrete arrays:
    call outside jit). Landmark order and faces are those of :func:`flamejax.landmarks.ibug68`
    at identity head rotation (its frontal contour bin)."""
    b = int(lmk.yaw_bin(jnp.eye(3, dtype=fixed.dtype)))
    face_ids = np.concatenate([np.asarray(embedding.dynamic_faces[b]), np.asarray(embedding.static_faces)])
    bary = jnp.concatenate([embedding.dynamic_bary[b], embedding.static_bary]).astype(fixed.dtype)
    corners = np.asarray(fixed.faces)[face_ids]                           # (L, 3) full-mesh vertex ids
    ids, local = np.unique(corners, return_inverse=True)
    sub = dataclasses.replace(fixed, rest=fixed.rest[:, ids], blenddirs=fixed.blenddirs[..., ids],
                              weights=fixed.weights[:, ids],
                              faces=jnp.asarray(local.reshape(corners.shape), jnp.int32), landmarks=None)
    return LandmarkSubmesh(sub, bary, jnp.asarray(ids, jnp.int32))


def _expression_and_jaw(problem: InversionProblem, controls):
    """theta = B c + g split into the expression (n,) and the jaw's axis-angle (3,)."""
    theta = problem.rig.basis @ controls + problem.rig.offset
    n = problem.rig.n_expr
    jaw = euler_to_axis_angle(theta[n:n + 3], problem.rig.jaw_convention)
    return theta[:n], jaw


def rig_geometry(problem: InversionProblem, controls: jnp.ndarray) -> jnp.ndarray:
    """(V, 3) metres: the rig's canonical-pose mesh at controls (K,)."""
    theta = problem.rig.basis @ controls + problem.rig.offset
    n = problem.rig.n_expr
    jaw = euler_to_axis_angle(theta[n:n + 3], problem.rig.jaw_convention)
    zero = jnp.zeros((3,), controls.dtype)
    return frame_vertices(problem.fixed, theta[:n], jaw, zero, zero, zero)


def _submesh_landmarks(sub: LandmarkSubmesh, psi, jaw):
    """(L, 3) landmarks of the canonical-pose rig from the sub-mesh at expression psi, jaw axis-angle."""
    zero = jnp.zeros((3,), jaw.dtype)
    v = frame_vertices(sub.fixed, psi, jaw, zero, zero, zero)
    return lmk.points_on_faces(v, sub.fixed.faces, jnp.arange(sub.bary.shape[0]), sub.bary)


def rig_points(problem: InversionProblem, controls: jnp.ndarray) -> jnp.ndarray:
    """What the objective compares with a target at controls (K,), metres: the mesh (V, 3)
    (:func:`rig_geometry`), or in landmark-only mode the landmarks (L, 3)."""
    if problem.landmarks is None:
        return rig_geometry(problem, controls)
    psi, jaw = _expression_and_jaw(problem, controls)
    return _submesh_landmarks(problem.landmarks, psi, jaw)


def _mean_square(problem: InversionProblem, r):
    """Weighted mean over vertices (uniform mean over landmarks) of |r|^2, r (V or L, 3)."""
    if problem.landmarks is None:
        m = problem.grams.weights
        return jnp.sum(m * jnp.sum(r * r, -1)) / jnp.sum(m)
    return jnp.mean(jnp.sum(r * r, -1))


def _geometry_term(problem: InversionProblem, controls, target):
    return MM2 * _mean_square(problem, rig_points(problem, controls) - target)


def objective(problem: InversionProblem, controls, target, weights: InversionWeights,
              anchor=None, anchor_weight=0.0):
    """f(c) of the module docstring for one frame; the temporal term is anchor_weight * |c - anchor|^2
    (neighbours folded into their mean: s (|c - a|^2 + |c - b|^2) = 2 s |c - (a + b)/2|^2 + const)."""
    f = _geometry_term(problem, controls, target) + jnp.sum(_penalty(problem, weights) * controls)
    if anchor is not None:
        f = f + anchor_weight * jnp.sum((controls - anchor) ** 2)
    return f


def _penalty(problem: InversionProblem, weights: InversionWeights):
    return weights.l1 + weights.tweaker * problem.tweakers


def _quadratic_model(problem: InversionProblem, controls, target):
    """Gradient (K,) and Gauss-Newton Hessian (K, K) of the geometry term at ``controls``."""
    rig = problem.rig
    n = rig.n_expr
    theta = rig.basis @ controls + rig.offset
    euler = theta[n:n + 3]
    to_aa = lambda e: euler_to_axis_angle(e, rig.jaw_convention)  # noqa: E731
    jaw, jac = to_aa(euler), jax.jacfwd(to_aa)(euler)                      # (3,), (3, 3)
    if problem.landmarks is None:
        zero = jnp.zeros((3,), controls.dtype)
        h, g, _ = normal_equations(problem.fixed, problem.grams, theta[:n], jaw, zero, zero, zero, target)
    else:
        h, g = landmark_normal_equations(problem.landmarks, theta[:n], jaw, target)
    bx = jnp.concatenate([rig.basis[:n], jac @ rig.basis[n:n + 3]], 0)   # d(psi, jaw_aa)/dc (n+3, K)
    return 2 * MM2 * (bx.T @ g), 2 * MM2 * (bx.T @ h @ bx)


def landmark_normal_equations(sub: LandmarkSubmesh, psi, jaw, target):
    """Gauss-Newton quantities of E(psi, jaw) = mean_l |lmk_l - target_l|^2 (canonical head pose):
    psi (n,), jaw (3,) axis-angle, target (L, 3) metres -> h (n+3, n+3) = J^T J / L and
    g (n+3,) = J^T r / L (half E's gradient), columns ordered (psi, jaw) as in
    :func:`flamejax.gauss_newton.normal_equations`. J (3L, n+3) by forward mode on the sub-mesh,
    the expression and the jaw columns separately (one pass of n+3 tangents would push all of
    them through the jaw's rotation and pose correctives: measured ~4x slower on CPU)."""
    def at_jaw(j):
        y = _submesh_landmarks(sub, psi, j)
        return y, y

    j_jaw, p = jax.jacfwd(at_jaw, has_aux=True)(jaw)                              # (L, 3, 3), (L, 3)
    j_psi = jax.jacfwd(lambda e: _submesh_landmarks(sub, e, jaw))(psi)           # (L, 3, n)
    n_l = p.shape[0]
    jac = jnp.concatenate([j_psi, j_jaw], -1).reshape(3 * n_l, -1)
    r = (p - target).reshape(-1)
    hi = jax.lax.Precision.HIGHEST
    return jnp.matmul(jac.T, jac, precision=hi) / n_l, jnp.matmul(jac.T, r, precision=hi) / n_l


def _box_qp(a, b, x0, iters: int, rho: float = 0.5):
    """argmin_{0 <= x <= 1} 1/2 x^T A x + b^T x (A symmetric positive definite, K x K) by ADMM on
    the Jacobi-scaled problem (unit diagonal; the controls' curvatures span ~5 decades), warm
    started at x0: one factorisation, then a mat-vec per iteration. Robust
    where projected Newton stalls on B's near-null directions and first-order methods crawl."""
    sc = 1.0 / jnp.sqrt(jnp.diagonal(a))                  # x = sc * z
    a_s = a * sc[:, None] * sc[None, :]
    b_s = sc * b
    hi = 1.0 / sc
    eye = jnp.eye(b.shape[0], dtype=b.dtype)
    # An explicit inverse: the iterations are then plain mat-vecs, which batch well over frames
    # (batched triangular solves of 122 x 122 do not); a_s + rho I is well conditioned.
    inv = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a_s + rho * eye), eye)

    def step(_, carry):
        z, u = carry
        x = inv @ (rho * (z - u) - b_s)
        z_new = jnp.clip(x + u, 0.0, hi)
        return z_new, u + x - z_new

    z0 = x0 / sc
    z, _ = jax.lax.fori_loop(0, iters, step, (z0, jnp.zeros_like(z0)))
    return sc * z


_STEPS = (1.0, 0.5, 0.25, 0.1)


class _Frame(NamedTuple):
    """One frame's inputs to the solver: target (V or L, 3), init (K,), anchor (K,), anchor_weight ()."""

    target: jnp.ndarray
    init: jnp.ndarray
    anchor: jnp.ndarray
    anchor_weight: jnp.ndarray


class _Carry(NamedTuple):
    """The solver's state on one frame: controls (K,), value (), moved () last step's largest
    control change, it () iterations, done () stopping rule met."""

    c: jnp.ndarray
    value: jnp.ndarray
    moved: jnp.ndarray
    it: jnp.ndarray
    done: jnp.ndarray


def _frame_objective(problem, weights, frame: _Frame):
    return lambda c: objective(problem, c, frame.target, weights, frame.anchor, frame.anchor_weight)  # noqa: E731


def _start(problem: InversionProblem, weights: InversionWeights, frame: _Frame) -> _Carry:
    c0 = jnp.clip(frame.init, 0.0, 1.0)
    value = _frame_objective(problem, weights, frame)(c0)
    return _Carry(c0, value, jnp.asarray(jnp.inf, value.dtype), jnp.asarray(0, jnp.int32), jnp.asarray(False))


def _step(problem: InversionProblem, weights: InversionWeights, cfg: InversionConfig, frame: _Frame,
          carry: _Carry):
    """One projected Gauss-Newton iteration (module docstring) -> (carry, finished)."""
    c, value = carry.c, carry.value
    dtype = c.dtype
    f = _frame_objective(problem, weights, frame)
    grad, hess = _quadratic_model(problem, c, frame.target)
    damp = cfg.damping * jnp.diagonal(hess) + 1e-9
    a = hess + jnp.diag(damp + 2 * frame.anchor_weight)
    b = grad - hess @ c + _penalty(problem, weights) - 2 * frame.anchor_weight * frame.anchor - damp * c
    proposal = _box_qp(a, b, c, cfg.qp_iters)
    candidates = c[None] + jnp.asarray(_STEPS, dtype)[:, None] * (proposal - c)[None]
    values = jax.vmap(f)(candidates)
    best = jnp.argmin(values)
    improved = values[best] < value
    c_new = jnp.where(improved, candidates[best], c)
    v_new = jnp.where(improved, values[best], value)
    moved = jnp.max(jnp.abs(c_new - c))
    gain = value - v_new
    done = ((~improved) | ((gain <= cfg.tol * (1.0 + jnp.abs(value))) & (moved <= cfg.xtol))
            | (gain <= cfg.rtol * jnp.abs(v_new)))
    it = carry.it + 1
    return _Carry(c_new, v_new, moved, it, done), done | (it >= cfg.maxiter)


def _state(problem: InversionProblem, weights: InversionWeights, frame: _Frame, carry: _Carry) -> InversionState:
    """The carry as an InversionState (one frame, or vmapped). The residual is the objective's
    geometry term, recovered from the value: value - penalties = MM2 * mean square (no rig
    evaluation)."""
    penalties = (jnp.sum(_penalty(problem, weights) * carry.c, -1)
                 + frame.anchor_weight * jnp.sum((carry.c - frame.anchor) ** 2, -1))
    residual = jnp.sqrt(jnp.maximum(carry.value - penalties, 0.0) / MM2)
    return InversionState(carry.it, carry.value, carry.moved, carry.done, residual)


@dataclasses.dataclass(frozen=True)
class RigInversion:
    """jaxopt-shaped solver of one frame's rig inversion (module docstring)."""

    config: InversionConfig = InversionConfig()

    def run(self, init, problem: InversionProblem, target, weights: InversionWeights = InversionWeights(),
            anchor=None, anchor_weight=0.0):
        """init (K,) in [0, 1]; target (V, 3) metres (landmark-only mode: (L, 3)) -> (controls (K,),
        InversionState)."""
        dtype = problem.fixed.dtype
        init = jnp.asarray(init, dtype)
        anchor = jnp.zeros_like(init) if anchor is None else jnp.asarray(anchor, dtype)
        frame = _Frame(jnp.asarray(target, dtype), init, anchor, jnp.asarray(anchor_weight, dtype))
        carry = jax.lax.while_loop(lambda s: ~s[1], lambda s: _step(problem, weights, self.config, frame, s[0]),
                                   (_start(problem, weights, frame), jnp.asarray(False)))[0]
        return carry.c, _state(problem, weights, frame, carry)


def _solve_frames(problem, targets, init, anchor, anchor_weight, weights, *, cfg: InversionConfig):
    solver = RigInversion(cfg)
    return jax.vmap(lambda y, c0, a, aw: solver.run(c0, problem, y, weights, a, aw))(targets, init, anchor,
                                                                                     anchor_weight)


def _solve_pooled(problem, targets, init, anchor, anchor_weight, n_frames, weights, *, cfg: InversionConfig,
                  width: int):
    """:func:`_solve_frames` on the first ``n_frames`` of (N, ...) padded inputs, through a pool of
    ``width`` slots (:mod:`flamejax.pooled`): a block no longer waits for its slowest frame."""
    dtype = problem.fixed.dtype
    frames = _Frame(targets, init.astype(dtype), anchor.astype(dtype), anchor_weight.astype(dtype))
    carry = solve_pooled(lambda fr: _start(problem, weights, fr), lambda fr, c: _step(problem, weights, cfg, fr, c),
                         frames, n_frames, width)
    return carry.c, jax.vmap(lambda fr, c: _state(problem, weights, fr, c))(frames, carry)


def _neighbour_anchor(controls, smoothness, n_frames: int):
    """Mean of each frame's neighbours and the weight 2 s (1 s at the two ends; 0 for a single
    frame). Frames from ``n_frames`` on are padding: they neither have nor are neighbours."""
    t = controls.shape[0]
    idx = jnp.arange(t)
    prev = jnp.concatenate([controls[:1], controls[:-1]])
    nxt = jnp.concatenate([controls[1:], controls[-1:]])
    has_prev, has_next = (idx > 0) & (idx < n_frames), idx < n_frames - 1
    count = has_prev.astype(controls.dtype) + has_next.astype(controls.dtype)
    total = jnp.where(has_prev[:, None], prev, 0.0) + jnp.where(has_next[:, None], nxt, 0.0)
    anchor = jnp.where(count[:, None] > 0, total / jnp.maximum(count, 1.0)[:, None], controls)
    return anchor, smoothness * count


def track_controls(problem: InversionProblem, targets, weights: InversionWeights = InversionWeights(),
                   config: InversionConfig = InversionConfig(), init=None, *, devices=None, block: int = 16,
                   chunk: int = 1024):
    """Invert the rig on every frame: targets (T, V, 3) metres (canonical head pose; (T, L, 3)
    landmarks in landmark-only mode) ->
    (controls (T, K), InversionState with (T,) fields). init (T, K) or (K,) or None (zeros).
    With ``weights.smoothness > 0`` and ``config.sweeps > 0`` the frames are coupled (module doc).

    Up to ``block`` frames on one device are solved by one vmapped call. Longer sequences go in
    chunks of ``chunk`` frames (the last one padded; one compiled program for every length), each
    solved through a pool of ``block`` slots (:mod:`flamejax.pooled`): a slot whose frame has
    converged takes the next frame, so the cost follows the mean number of iterations, not the
    slowest frame's. devices: where the chunks run (default: all of ``jax.devices()``),
    round-robin, each device holding a copy of the rig; with several, the result is one array
    sharded along the frames (``jax.sharding.NamedSharding``). The temporal sweeps exchange
    neighbouring frames between sweeps. The result does not depend on the devices."""
    dtype = problem.fixed.dtype
    targets = _check_targets(problem, targets)
    if block < 1 or chunk < 1:
        raise ValueError(f"block and chunk must be >= 1, got {block} and {chunk}")
    problem, config = _canonical(problem, weights, config)
    t, k = targets.shape[0], problem.rig.n_controls
    init = jnp.zeros((t, k), dtype) if init is None else jnp.broadcast_to(jnp.asarray(init, dtype), (t, k))
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 1 and t <= block:
        return _track(problem, targets, weights, init, config=config, n_frames=t)
    return _track_chunks(problem, targets, weights, init, config, devices, block, chunk)


def _track_chunks(problem, targets, weights, init, config: InversionConfig, devices, block: int, chunk: int):
    # Why not one partitioned program over several devices: XLA partitions a vmapped while_loop
    # by synchronising all devices on every iteration's stopping test (and on virtual CPU devices
    # that program did not finish); per-chunk programs run independently.
    t = targets.shape[0]
    n_chunks = -(-t // chunk)
    pad = n_chunks * chunk - t
    targets = np.asarray(targets)
    targets = np.concatenate([targets, np.repeat(targets[-1:], pad, 0)])
    controls = np.asarray(jnp.concatenate([init, jnp.repeat(init[-1:], pad, 0)]))
    dtype = problem.fixed.dtype
    spans = [slice(i * chunk, (i + 1) * chunk) for i in range(n_chunks)]
    counts = [min(chunk, t - i * chunk) for i in range(n_chunks)]
    where = [devices[i % len(devices)] for i in range(n_chunks)]
    copies = {d: jax.device_put(problem, d) for d in devices}
    local = [jax.device_put(targets[sp], d) for sp, d in zip(spans, where)]
    # Virtual CPU devices share one thread pool, and concurrent executions of this program on them
    # can wedge it (observed with --xla_force_host_platform_device_count): there the chunks run one
    # after another; on accelerators they run concurrently (asynchronous dispatch).
    serial = len(devices) > 1 and all(d.platform == "cpu" for d in devices)

    def solve(controls, anchor, anchor_weight):
        outs = []
        for sp, n, d, y in zip(spans, counts, where, local):
            put = lambda x: jax.device_put(x, d)  # noqa: E731
            out = _pooled_jit(copies[d], y, put(controls[sp]), put(anchor[sp]), put(anchor_weight[sp]),
                              np.int32(n), weights, cfg=config, width=block)
            outs.append(jax.block_until_ready(out) if serial else out)
        host = [jax.device_get(o) for o in outs]
        return jax.tree_util.tree_map(lambda *x: np.concatenate(x), *host)

    controls, state = solve(controls, np.zeros_like(controls), np.zeros(len(controls), dtype))
    if config.sweeps > 0 and float(weights.smoothness) > 0:
        for _ in range(config.sweeps):
            anchor, aw = _neighbour_anchor(jnp.asarray(controls), jnp.asarray(weights.smoothness, dtype), t)
            controls, state = solve(controls, np.asarray(anchor), np.asarray(aw))
    controls, state = jnp.asarray(controls[:t]), jax.tree_util.tree_map(lambda x: jnp.asarray(x[:t]), state)
    if len(devices) > 1:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("frames",))
        spec = jax.sharding.PartitionSpec("frames") if t % len(devices) == 0 else jax.sharding.PartitionSpec()
        controls = jax.device_put(controls, jax.sharding.NamedSharding(mesh, spec))
    return controls, state


def track_sweep(problem: InversionProblem, targets, weights: InversionWeights,
                config: InversionConfig = InversionConfig()):
    """A grid of G weight settings in one compiled, vmapped program: ``weights`` with (G,)
    leaves -> (controls (G, T, K), state with (G, T) fields). targets as in :func:`track_controls`.
    One device."""
    controls, state = track_grid([problem], targets, weights, config)
    return controls[0], jax.tree_util.tree_map(lambda x: x[0], state)


def track_grid(problems, targets, weights: InversionWeights, config: InversionConfig = InversionConfig(), *,
               block: int = 16):
    """Every one of P rigs (e.g. calibrated with different settings) x every one of W weight
    settings on the same targets, in one compiled program: problems a sequence of P
    InversionProblems of one model (same shapes; landmark mode or not alike), weights with (W,)
    leaves -> (controls (P, W, T, K), state with (P, W, T) fields). One device.

    The rigs are solved one after another inside the program (``lax.map``): each rig's grams are
    then one shared operand of all its W x T solves, which batch as matrix products (vmapping the
    rigs too makes every product a batched one, measured ~2x slower on CPU). Without temporal
    smoothness the W x T solves go through a pool of ``block`` slots (:mod:`flamejax.pooled`); with
    some smoothness > 0, every frame of a setting is vmapped and swept (:func:`track_controls`)."""
    problems = [_all_joint_grams(p) for p in problems]
    if not problems:
        raise ValueError("track_grid needs at least one problem")
    shapes = [jax.tree_util.tree_map(np.shape, p) for p in problems]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("track_grid's problems must have the same shapes (one model, one control set, "
                         "the same tracking mode)")
    targets = _check_targets(problems[0], targets)
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *problems)
    dtype = problems[0].fixed.dtype
    t, k = targets.shape[0], problems[0].rig.n_controls
    weights = InversionWeights(*(jnp.atleast_1d(jnp.asarray(w, dtype)) for w in weights))
    smooth = (config.sweeps > 0 and (_is_tracer(weights.smoothness) or bool(np.any(np.asarray(weights.smoothness) > 0))))
    if smooth:
        return _grid(stacked, targets, weights, jnp.zeros((t, k), dtype), config=config, n_frames=t)
    return _grid_pooled(stacked, targets, weights, config=config, width=block)


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


_FULL_GRAMS: dict = {}   # id(grams.g) -> (grams.g, padded grams): a few recent rigs


def _all_joint_grams(problem: InversionProblem) -> InversionProblem:
    """The problem with its grams over *every* joint of the model, the inactive joints' entries zero
    (exact: they are sums over vertices that those joints' weights and the basis never share). So
    one compiled tracker serves every rig of a model: e.g. a calibrated basis that moves vertices
    skinned to the eyes makes those joints active, which otherwise changes the grams' shapes and
    compiles a second program (~15-30 s on this CPU). Costs ~3% per iteration with FLAME's 5 joints
    vs 3. Padded grams are cached for a few recent rigs (concrete problems only)."""
    gr = problem.grams
    if gr is None or any(_is_tracer(x) for x in (gr.g, gr.h, gr.joints)):
        return problem
    n_joints, n = gr.s.shape[0], gr.basis.shape[0]
    joints = np.asarray(gr.joints)
    if joints.shape == (n_joints,) and np.array_equal(joints, np.arange(n_joints)):
        return problem
    hit = _FULL_GRAMS.get(id(gr.g))
    if hit is None or hit[0] is not gr.g:
        a = len(joints)
        idx = jnp.asarray(joints)
        g = jnp.transpose(gr.g.reshape(a, 3, a, 3, n, n), (0, 2, 1, 3, 4, 5))
        g = jnp.zeros((n_joints, n_joints) + g.shape[2:], g.dtype).at[idx[:, None], idx[None, :]].set(g)
        g = jnp.transpose(g, (0, 2, 1, 3, 4, 5)).reshape(n_joints * 3, n_joints * 3, n, n)
        h = jnp.zeros((n_joints, n_joints) + gr.h.shape[2:], gr.h.dtype).at[idx[:, None], idx[None, :]].set(gr.h)
        full = gr._replace(g=g, h=h, joints=jnp.arange(n_joints, dtype=gr.joints.dtype))
        if len(_FULL_GRAMS) >= 8:
            _FULL_GRAMS.pop(next(iter(_FULL_GRAMS)))
        _FULL_GRAMS[id(gr.g)] = hit = (gr.g, full)
    return problem._replace(grams=hit[1])


def _canonical(problem: InversionProblem, weights: InversionWeights, config: InversionConfig):
    """What the compiled programs see: grams over every joint (:func:`_all_joint_grams`), and no
    temporal sweeps when the smoothness is a concrete 0 (their program is then not compiled)."""
    s = weights.smoothness
    if config.sweeps > 0 and not _is_tracer(s) and np.ndim(s) == 0 and float(s) == 0.0:
        config = dataclasses.replace(config, sweeps=0)
    return _all_joint_grams(problem), config


def _check_targets(problem: InversionProblem, targets):
    targets = jnp.asarray(targets, problem.fixed.dtype)
    if problem.landmarks is None:
        n, what = problem.fixed.rest.shape[1], "the rig's vertices"
    else:
        n, what = problem.landmarks.bary.shape[0], "the rig's landmarks: landmark-only mode"
    if targets.ndim != 3 or targets.shape[1:] != (n, 3) or targets.shape[0] == 0:
        raise ValueError(f"targets must be (T, {n}, 3) with T >= 1 ({what}), got {targets.shape}")
    return targets


def _track_impl(problem, targets, weights, init, config: InversionConfig, n_frames: int):
    t = targets.shape[0]
    dtype = problem.fixed.dtype
    solve = lambda *a: _solve_frames(problem, *a, weights, cfg=config)  # noqa: E731
    zeros = jnp.zeros_like(init)
    controls, state = solve(targets, init, zeros, jnp.zeros((t,), dtype))
    if config.sweeps > 0:
        def sweep(carry, _):
            anchor, aw = _neighbour_anchor(carry[0], jnp.asarray(weights.smoothness, dtype), n_frames)
            return solve(targets, carry[0], anchor, aw), None
        smooth = lambda: jax.lax.scan(sweep, (controls, state), None, length=config.sweeps)[0]  # noqa: E731
        controls, state = jax.lax.cond(jnp.asarray(weights.smoothness) > 0, smooth, lambda: (controls, state))
    return controls, state


_track = jax.jit(_track_impl, static_argnames=("config", "n_frames"))
_pooled_jit = jax.jit(_solve_pooled, static_argnames=("cfg", "width"))


def _grid_impl(problems, targets, weights, init, config: InversionConfig, n_frames: int):
    def per_problem(problem):
        return jax.vmap(lambda w: _track_impl(problem, targets, w, init, config, n_frames))(weights)

    return jax.lax.map(per_problem, problems)


def _grid_pooled_impl(problems, targets, weights, config: InversionConfig, width: int):
    """Per rig, the W x T (weights, frame) solves through one pool (no temporal term)."""
    n_w, t = weights.l1.shape[0], targets.shape[0]
    dtype = targets.dtype
    k = problems.rig.basis.shape[-1]
    zeros = jnp.zeros((n_w * t, k), dtype)
    frames = _Frame(jnp.tile(targets, (n_w, 1, 1)), zeros, zeros, jnp.zeros((n_w * t,), dtype))
    item_weights = jax.tree_util.tree_map(lambda w: jnp.repeat(w, t), weights)

    def per_problem(problem):
        carry = solve_pooled(lambda it: _start(problem, it[1], it[0]),
                             lambda it, c: _step(problem, it[1], config, it[0], c),
                             (frames, item_weights), n_w * t, width)
        state = jax.vmap(lambda fr, w, c: _state(problem, w, fr, c))(frames, item_weights, carry)
        return jax.tree_util.tree_map(lambda x: x.reshape((n_w, t) + x.shape[1:]), (carry.c, state))

    return jax.lax.map(per_problem, problems)


_grid = jax.jit(_grid_impl, static_argnames=("config", "n_frames"))
_grid_pooled = jax.jit(_grid_pooled_impl, static_argnames=("config", "width"))
