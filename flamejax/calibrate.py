"""Simon-Says calibration (DESIGN.md section 1, the paper's Eq. 1): exact conjugate gradients on
the expression basis (f is quadratic in it), jaxopt's L-BFGS when B and g are calibrated too.

The performer acts ~20 prompted expressions; expression k has intended controls c_k (K,) and
tracked geometry v_k (V, 3) in the canonical head pose. Calibration changes the rig's FLAME
expression basis E (E, V, 3) (and optionally the semantic basis B (P, K) and offset g (P,)) so
that the rig R(c) = FLAME(beta, expression=theta[:n_expr], jaw=theta[n_expr:]), theta = B c + g,
reproduces them:

    f(x) = sum_k a_k wmse_k(x) / n_expr_seen                        expressions (data)
         + w_combo * mean_j mean_v |R(c_j; x) - R(c_j; x0)|^2 / L^2  combinations keep working
         + reg * ||z||^2                                            stay near the generic rig

with wmse_k = sum_v m_k(v) |R(c_k; x) - v_k(v)|^2 / (sum_v m_k(v) L^2) the mask-weighted mean
square of sample k, a_k = 1 / (number of samples of k's expression), so every expression counts
once whether its hold frames were averaged or kept ("mean" and "all" give the same minimiser),
and L = ``cfg.length`` (1 mm): every term is in mm^2 whatever the mesh size.

Units of the regulariser. The optimiser works on the normalised change z of the parameters x:
- exprdirs: z_E = (E - E0) / (L sqrt(V)), so ||z_E||^2 = sum_e mean_v |dE_e|^2 / L^2: the squared
  RMS geometry change (mm^2) each expression component makes at unit coefficient;
- B, g: z = (B - B0) * s_p / L with s_p ~ RMS_v |dR/dtheta_p| at the neutral face (metres per
  unit theta_p; radians for the jaw rows; see :func:`theta_scale`), so ||z_B||^2 is, to first order, the squared RMS
  geometry change (mm^2) each control makes at full activation.
Normalised this way the objective's gradient and Hessian do not scale with V or the basis
magnitude, so one ``reg`` and one ``tol`` work for any mesh (and L-BFGS's first step is sane).

Only directions of E that some Simon-Says theta_k exercises are identifiable (the data term is
E applied to the psi_k); L-BFGS's iterates move only inside that span (the gradient lies in
it), CG works in a basis of it, and the regulariser makes the problem strictly convex within it.

Everything is per performer and jit/vmap-able: batch performers with :func:`calibrate_many`
(performers acting the same prompts share the design's work: see there).
Export: ``save_flame(calibrated_model(model, result), "performer.pkl")``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.descent import minimize_lbfgs
from flamejax.flame import FlameModel, bind_identity
from flamejax.pcg import minimize_quadratic
from flamejax.semantic.rig import SemanticRig, rig_vertices, rig_vertices_frames

PARAMETERS = ("exprdirs", "rig", "both")
SOLVERS = ("auto", "cg", "lbfgs")


class SimonSaysData(NamedTuple):
    """Calibration samples of one performer (a pytree; stack for vmap).

    controls (N, K) intended controls; vertices (N, V, 3) tracked geometry, canonical pose,
    metres; weights (N, V) per-vertex mask weights (0 outside the expression's region);
    expression (N,) int32 Simon-Says expression index, -1 for padding (ignored).
    """

    controls: jnp.ndarray
    vertices: jnp.ndarray
    weights: jnp.ndarray
    expression: jnp.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Knobs of :func:`calibrate_simon_says`. A pytree: the numbers are leaves, so changing
    them does not recompile; ``parameters``, ``maxiter`` and ``history_size`` are static.

    reg: weight of ||z||^2 (module doc); 1e-3 is small next to a unit coefficient's fit (the
      rig's theta entries are O(1)), so the fit is barely shrunk, yet nearly collinear
      Simon-Says thetas cannot blow the basis up.
    w_combo: weight of the mean combination term relative to the mean expression term (1: a
      combination counts like the average expression).
    tol: stop when the gradient norm of f (normalised units, independent of V) is below it.
    use_masks: weight vertices by ``data.weights``; False: every vertex counts.
    length: L in metres, the unit of every term (1 mm).
    parameters: "exprdirs" (the paper's default: a calibrated FLAME file), "rig" (B and g
      only) or "both".
    solver: "cg" (exprdirs only: f is then an exact quadratic in E, minimised by preconditioned
      conjugate gradients, see :func:`calibrate_simon_says`), "lbfgs" (jaxopt's L-BFGS, any
      parameters), or "auto" (cg for exprdirs, lbfgs otherwise).
    maxiter: iterations at most (L-BFGS: 100 converge the default world's 20 expressions to < 1%
      of the objective; CG reaches ``tol`` in ~10-30). history_size: L-BFGS memory. linesearch:
      jaxopt's ("zoom": fewest evaluations; "backtracking": half the compile time).
    """

    reg: float = 1e-3
    w_combo: float = 1.0
    tol: float = 1e-4
    use_masks: bool = True
    length: float = 1e-3
    parameters: str = dataclasses.field(default="exprdirs", metadata=dict(static=True))
    maxiter: int = dataclasses.field(default=100, metadata=dict(static=True))
    history_size: int = dataclasses.field(default=10, metadata=dict(static=True))
    linesearch: str = dataclasses.field(default="zoom", metadata=dict(static=True))
    solver: str = dataclasses.field(default="auto", metadata=dict(static=True))

    def __post_init__(self):
        if self.parameters not in PARAMETERS:
            raise ValueError(f"parameters must be one of {PARAMETERS}, got {self.parameters!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver == "cg" and self.parameters != "exprdirs":
            raise ValueError("solver='cg' needs parameters='exprdirs': B and g move the jaw's rotation, so f is "
                             "not quadratic in them; use solver='lbfgs' (or 'auto')")
        if self.maxiter < 1:
            raise ValueError(f"maxiter must be >= 1, got {self.maxiter}")
        # leaves are tracers when JAX rebuilds the config inside a transformation: check numbers only
        for name in ("reg", "w_combo", "tol", "length"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and (value < 0 or (name == "length" and value == 0)):
                raise ValueError(f"{name} must be {'> 0' if name == 'length' else '>= 0'}, got {value}")


class CalibratedRig(NamedTuple):
    """exprdirs (E, V, 3) the calibrated expression basis (metres per unit coefficient) and the
    (possibly recalibrated) SemanticRig."""

    exprdirs: jnp.ndarray
    rig: SemanticRig


class CalibrationState(NamedTuple):
    """iter_num () solver iterations run (L-BFGS or CG); value () final objective (mm^2, module doc);
    error () final gradient norm; history (maxiter + 1,) objective after i iterations
    (entry 0: the generic rig), NaN past iter_num; residual_before / residual_after (N,)
    weighted RMS metres of each sample (a Simon-Says expression with frames="mean");
    combination_drift (C,) RMS metres between calibrated and uncalibrated rig at each
    combination; stalled () True when two steps in a row (the second after clearing the L-BFGS
    memory) failed to decrease f: the solver stopped at the last good iterate (in float32 the
    usual way to stop once f is converged to its resolution); always False with CG."""

    iter_num: jnp.ndarray
    value: jnp.ndarray
    error: jnp.ndarray
    history: jnp.ndarray
    residual_before: jnp.ndarray
    residual_after: jnp.ndarray
    combination_drift: jnp.ndarray
    stalled: jnp.ndarray


# ---------------------------------------------------------------- data


def simon_says_data(controls, vertices, hold, masks: Optional[Sequence] = None,
                    frames: str = "mean") -> SimonSaysData:
    """Samples from a Simon-Says take (NumPy, outside jit: the sample count depends on the data).

    controls (T, K); vertices (T, V, 3) metres; hold (T,) int: expression index on labelled hold
    frames, -1 elsewhere; masks: per expression the vertex ids of its region (e.g.
    face-calibration's ``masks/<i>.npy``), or None for all vertices. frames: "mean" averages
    each expression's hold frames into one sample (N = expressions held, in index order);
    "all" keeps every hold frame (N = hold frames, in time order).
    """
    controls, vertices, hold = np.asarray(controls), np.asarray(vertices), np.asarray(hold)
    if controls.ndim != 2:
        raise ValueError(f"controls must be (T, K), got shape {controls.shape}")
    t = controls.shape[0]
    if vertices.ndim != 3 or vertices.shape[0] != t or vertices.shape[2] != 3:
        raise ValueError(f"vertices must be (T={t}, V, 3), got shape {vertices.shape}")
    if hold.shape != (t,) or not np.issubdtype(hold.dtype, np.integer):
        raise ValueError(f"hold must be an integer array of shape ({t},), got {hold.dtype} {hold.shape}")
    if frames not in ("mean", "all"):
        raise ValueError(f"frames must be 'mean' or 'all', got {frames!r}")
    n_v = vertices.shape[1]
    labelled = np.flatnonzero(hold >= 0)
    if len(labelled) == 0:
        raise ValueError("no labelled hold frames (hold >= 0)")
    if masks is not None and len(masks) <= hold.max():
        raise ValueError(f"{len(masks)} masks but hold labels go up to expression {hold.max()}")
    if frames == "mean":
        expression = np.unique(hold[labelled])
        c = np.stack([controls[hold == e].mean(0) for e in expression])
        v = np.stack([vertices[hold == e].mean(0) for e in expression])
    else:
        expression, c, v = hold[labelled], controls[labelled], vertices[labelled]
    weights = np.ones((len(expression), n_v), vertices.dtype)
    if masks is not None:
        weights[:] = 0
        for row, e in enumerate(expression):
            ids = np.asarray(masks[e])
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(ids) == 0 \
                    or ids.min() < 0 or ids.max() >= n_v:
                raise ValueError(f"mask {e} must be non-empty integer vertex ids in [0, {n_v})")
            weights[row, ids] = 1
    return SimonSaysData(jnp.asarray(c), jnp.asarray(v), jnp.asarray(weights),
                         jnp.asarray(expression, jnp.int32))


def stack_data(samples: Sequence[SimonSaysData]) -> SimonSaysData:
    """Stack performers' data for :func:`calibrate_many`, padding to the largest N with
    ignored samples (expression -1, zero weights)."""
    n = max(len(d.expression) for d in samples)

    def pad(d: SimonSaysData) -> SimonSaysData:
        extra = n - len(d.expression)
        rows = lambda x, value=0: jnp.concatenate([x, jnp.full((extra,) + x.shape[1:], value, x.dtype)])
        return SimonSaysData(rows(d.controls), rows(d.vertices), rows(d.weights), rows(d.expression, -1))

    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *map(pad, samples))


# ---------------------------------------------------------------- objective


def sample_weights(expression, dtype) -> jnp.ndarray:
    """(N,) a_k = 1 / (number of samples of k's expression), 0 for padding (expression -1): every
    expression counts once whether its hold frames were averaged or kept."""
    valid = expression >= 0
    same = (expression[:, None] == expression[None, :]) & valid[None, :]
    return jnp.where(valid, 1.0 / jnp.maximum(jnp.sum(same, 1), 1), 0.0).astype(dtype)


def theta_scale(model: FlameModel, rig: SemanticRig, beta) -> jnp.ndarray:
    """(P,) s_p ~ RMS_v |dR/dtheta_p| at the neutral face, metres per unit theta_p, floored so a
    component that moves nothing cannot blow up the normalisation.

    Expression rows: exactly RMS_v |E0_p|. Jaw (and neck) rows: the skinning lever
    w_j(v) |e_i x (v - J_j)| of a small rotation about axis i (the pose correctives' share is
    left out: it is small, and this is only a scale). Closed form, so it costs no extra compile.
    """
    v = model.v_template + jnp.einsum("s,svx->vx", jnp.zeros(model.n_shape, model.dtype).at[:beta.shape[0]]
                                      .set(beta), model.identity_dirs)
    joints = model.j_regressor @ v
    expr = jnp.sqrt(jnp.mean(jnp.sum(model.exprdirs[:rig.n_expr] ** 2, -1), -1))
    rows = [expr]
    for joint in (2, 1)[:1 + rig.has_neck]:  # jaw, then neck
        arm = v - joints[joint]                                       # (V, 3)
        lever = jnp.cross(jnp.eye(3, dtype=v.dtype)[:, None, :], arm[None])  # (3, V, 3)
        rows.append(jnp.sqrt(jnp.mean(model.weights[:, joint] ** 2 * jnp.sum(lever ** 2, -1), -1)))
    s = jnp.concatenate(rows)
    return jnp.maximum(s, 1e-6 * jnp.max(s))


def _unpack(z, x0: CalibratedRig, scale, cfg: CalibrationConfig) -> CalibratedRig:
    """Normalised change z (dict) -> parameters (module doc)."""
    e0, rig0 = x0
    n_v = e0.shape[1]
    exprdirs = e0 + z["exprdirs"] * (cfg.length * np.sqrt(n_v)) if "exprdirs" in z else e0
    rig = rig0
    if "basis" in z:
        inv = (cfg.length / scale).astype(e0.dtype)
        rig = dataclasses.replace(rig0, basis=rig0.basis + z["basis"] * inv[:, None],
                                  offset=rig0.offset + z["offset"] * inv)
    return CalibratedRig(exprdirs, rig)


def _weighted_ms(diff, weights):
    """diff (N, V, 3), weights (N, V) -> (N,) weighted mean squared distance."""
    return jnp.sum(weights * jnp.sum(diff ** 2, -1), -1) / jnp.maximum(jnp.sum(weights, -1), 1e-30)


def _data_terms(pred, combo_pred, sample_w, data, weights, combo_targets, cfg):
    """f without its regulariser (module doc), from the rig's meshes at the samples' controls,
    pred (N, V, 3), and at the combinations, combo_pred (C, V, 3) or None."""
    length2 = cfg.length ** 2
    f = jnp.sum(sample_w * _weighted_ms(pred - data.vertices, weights)) / jnp.maximum(jnp.sum(sample_w), 1.0)
    f = f / length2
    if combo_pred is not None and combo_pred.shape[0] > 0:
        f = f + cfg.w_combo * jnp.mean(jnp.sum((combo_pred - combo_targets) ** 2, -1)) / length2
    return f


def _objective(z, x0, scale, model, beta, data, weights, sample_w, combos, combo_targets, cfg):
    x = _unpack(z, x0, scale, cfg)
    pred = rig_vertices_frames(model, x.rig, data.controls, shape=beta, exprdirs=x.exprdirs)
    combo_pred = None
    if combos is not None and combos.shape[0] > 0:
        combo_pred = rig_vertices_frames(model, x.rig, combos, shape=beta, exprdirs=x.exprdirs)
    return (_data_terms(pred, combo_pred, sample_w, data, weights, combo_targets, cfg)
            + cfg.reg * sum(jnp.sum(v ** 2) for v in jax.tree_util.tree_leaves(z)))


# ---------------------------------------------------------------- solver


class _Problem(NamedTuple):
    """One performer's calibration problem, ready for :func:`_objective` (``args``)."""

    x0: CalibratedRig
    scale: Optional[jnp.ndarray]
    model: FlameModel
    beta: jnp.ndarray
    data: SimonSaysData
    weights: jnp.ndarray
    sample_w: jnp.ndarray
    combinations: Optional[jnp.ndarray]
    combo_targets: Optional[jnp.ndarray]

    @property
    def has_combinations(self) -> bool:
        return self.combinations is not None and self.combinations.shape[0] > 0


def _solver(cfg: CalibrationConfig) -> str:
    if cfg.solver == "auto":
        return "cg" if cfg.parameters == "exprdirs" else "lbfgs"
    return cfg.solver


def _prepare(model, rig, beta, data, combinations, cfg) -> _Problem:
    n, k = data.controls.shape
    if data.vertices.shape != (n, model.n_vertices, 3) or data.weights.shape != (n, model.n_vertices) \
            or data.expression.shape != (n,) or k != rig.n_controls:
        raise ValueError(f"data shapes {[x.shape for x in data]} do not fit a model of {model.n_vertices} "
                         f"vertices and a rig of {rig.n_controls} controls")
    model = dataclasses.replace(model, landmarks=None)   # only vertices are needed
    dt = model.dtype
    beta = jnp.asarray(beta, dt)
    data = SimonSaysData(data.controls.astype(dt), data.vertices.astype(dt), data.weights.astype(dt),
                         data.expression)
    rig = dataclasses.replace(rig, basis=rig.basis.astype(dt), offset=rig.offset.astype(dt))
    valid = data.expression >= 0
    weights = jnp.where(cfg.use_masks, data.weights, 1.0) * valid[:, None]
    combo_targets = None
    if combinations is not None:
        combinations = jnp.asarray(combinations, dt)
        combo_targets = rig_vertices_frames(model, rig, combinations, shape=beta)
    scale = theta_scale(model, rig, beta) if cfg.parameters in ("rig", "both") else None
    return _Problem(CalibratedRig(model.exprdirs, rig), scale, model, beta, data, weights,
                    sample_weights(data.expression, dt), combinations, combo_targets)


def _finish(prob: _Problem, z, run, stalled, cfg) -> tuple[CalibratedRig, CalibrationState]:
    x = _unpack(z, prob.x0, prob.scale, cfg)
    model, beta, data = prob.model, prob.beta, prob.data

    def residual(params: CalibratedRig):
        pred = rig_vertices_frames(model, params.rig, data.controls, shape=beta, exprdirs=params.exprdirs)
        return jnp.sqrt(_weighted_ms(pred - data.vertices, prob.weights))

    if not prob.has_combinations:
        drift = jnp.zeros((0,), model.dtype)
    else:
        out = rig_vertices_frames(model, x.rig, prob.combinations, shape=beta, exprdirs=x.exprdirs)
        drift = jnp.sqrt(jnp.mean(jnp.sum((out - prob.combo_targets) ** 2, -1), -1))
    return x, CalibrationState(run.iter_num, run.value, run.error, run.history,
                               residual(prob.x0), residual(x), drift, stalled)


def _solve_lbfgs(prob: _Problem, cfg):
    z0 = {}
    if cfg.parameters in ("exprdirs", "both"):
        z0["exprdirs"] = jnp.zeros_like(prob.x0.exprdirs)
    if cfg.parameters in ("rig", "both"):
        z0["basis"], z0["offset"] = jnp.zeros_like(prob.x0.rig.basis), jnp.zeros_like(prob.x0.rig.offset)
    z, run = minimize_lbfgs(lambda z: _objective(z, *prob, cfg), z0, maxiter=cfg.maxiter, tol=cfg.tol,
                            history_size=cfg.history_size, linesearch=cfg.linesearch)
    return _finish(prob, z, run, run.stalled, cfg)


# ---------------------------------------------------------------- exprdirs: an exact quadratic
#
# With B and g fixed every sample's jaw rotation is fixed, and FLAME is then affine in E (the
# expression blend, the joints regressed from it, and skinning are all linear in E at fixed
# rotations): f is a convex quadratic in E. Its Hessian depends on the design only (the controls,
# masks, sample and combination weights), not on the performer's identity or geometry.
#
# Only E's action on the sample and combination thetas is seen by the data, and the regulariser
# is isotropic, so the minimiser changes E only inside the span of those psi's: E = E0 + Q Y
# scaled as z (module doc), Q (E, r) an orthonormal basis of the span (r = N + C at most, ~30 vs
# 100 expression components), Y (r, V, 3) the unknowns. CG then runs with a block-diagonal
# preconditioner: at vertex v, ignoring the blend of jaw and head rotations (a rotation leaves
# |.| alone) and the joints' small motion with psi, the Hessian is (2 sum_k c_kv V q_k q_k^T +
# combinations + 2 reg I) (x) I_3, an r x r block per vertex. Measured on the default world: ~21
# iterations to tol = 1e-4 (14 to 1e-2); exact per-vertex skinning blocks (3r x 3r, with M^T M)
# were tried and saved no iteration, so the jaw's joint motion, not the blend, is what is left.


class _Design(NamedTuple):
    """What CG needs that depends on the design only: q_basis (E, r) = Q; q (N, r) and
    q_combos (C, r) the samples' and combinations' psi in Q's coordinates; inverse (V, r, r) the
    preconditioner's per-vertex blocks, inverted (the same for the 3 coordinates)."""

    q_basis: jnp.ndarray
    q: jnp.ndarray
    q_combos: jnp.ndarray
    inverse: jnp.ndarray

    def precondition(self, res):
        """P^-1 res for res (r, V, 3)."""
        return jnp.einsum("vij,jvx->ivx", self.inverse, res)


def _cg_design(prob: _Problem, cfg) -> _Design:
    rig, data = prob.x0.rig, prob.data
    n_model, n_v = prob.x0.exprdirs.shape[0], prob.x0.exprdirs.shape[1]
    dt = prob.x0.exprdirs.dtype

    def psi_of(controls):
        theta = controls @ rig.basis.T + rig.offset
        return jnp.zeros((controls.shape[0], n_model), dt).at[:, :rig.n_expr].set(theta[:, :rig.n_expr])

    psi = psi_of(data.controls)
    has_combos = prob.has_combinations
    psi_c = psi_of(prob.combinations) if has_combos else jnp.zeros((0, n_model), dt)
    _, sv, vt = jnp.linalg.svd(jnp.concatenate([psi, psi_c]), full_matrices=False)
    # Directions outside the span (rank-deficient designs) are zeroed, not kept: there the data
    # say nothing, and CG would otherwise amplify rounding noise by 1 / reg along them.
    rank_tol = sv[0] * max(psi.shape[0] + psi_c.shape[0], n_model) * jnp.finfo(dt).eps
    q_basis = vt.T * (sv > rank_tol)                                                    # (E, r)
    q, qc = psi @ q_basis, psi_c @ q_basis
    r = q_basis.shape[1]
    # the data term's weight of (sample k, vertex v), as in _objective
    c = (prob.sample_w / jnp.maximum(jnp.sum(prob.sample_w), 1.0))[:, None] \
        * prob.weights / jnp.maximum(jnp.sum(prob.weights, -1, keepdims=True), 1e-30)
    blocks = n_v * jnp.einsum("nv,ni,nj->vij", c, q, q)
    if has_combos:
        blocks = blocks + cfg.w_combo / psi_c.shape[0] * (qc.T @ qc)[None]
    eye = jnp.eye(r, dtype=dt)
    blocks = 2 * blocks + (2 * cfg.reg + 1e-6 * jnp.max(jnp.trace(blocks, axis1=1, axis2=2)) / r) * eye
    # Explicit inverses (once per design): applying them is then a batched product, where batched
    # triangular solves run one small solve at a time on CPU (measured: 90% of a 32-performer run).
    inverse = jax.vmap(lambda a: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), eye))(blocks)
    return _Design(q_basis, q, qc, inverse)


def _cg_objective(prob: _Problem, design: _Design, cfg):
    """f as a function of Y (r, V, 3), equal to :func:`_objective` at z_E = Q Y but without
    forming E: sample k's expression change E psi_k - E0 psi_k = L sqrt(V) Y^T q_k is a rest-pose
    offset u_k (V, 3), added to the bound identity's rest mesh and, through the joint regressor,
    to its joints (where FLAME's expression blend would have put it). So products with the
    Hessian cost r (not E) per vertex and sample."""
    fixed = bind_identity(prob.model, prob.beta)
    rig, data = prob.x0.rig, prob.data
    scale = cfg.length * np.sqrt(fixed.rest.shape[1])

    def posed(controls, qk, y):
        u = scale * jnp.einsum("r,rvx->vx", qk, y)
        moved = dataclasses.replace(fixed, rest=fixed.rest + u.T, j_rest=fixed.j_rest + prob.model.j_regressor @ u)
        return rig_vertices(moved, rig, controls)

    def f(y):
        pred = jax.vmap(posed, (0, 0, None))(data.controls, design.q, y)
        combo_pred = None
        if prob.has_combinations:
            combo_pred = jax.vmap(posed, (0, 0, None))(prob.combinations, design.q_combos, y)
        return (_data_terms(pred, combo_pred, prob.sample_w, data, prob.weights, prob.combo_targets, cfg)
                + cfg.reg * jnp.sum(y ** 2))

    return f


def _y_zero(prob: _Problem, design: _Design):
    """Y = 0 (r, V, 3): the generic basis, CG's start."""
    return jnp.zeros((design.q_basis.shape[1],) + prob.x0.exprdirs.shape[1:], design.q_basis.dtype)


def _solve_cg(prob: _Problem, design: _Design, hvp, cfg):
    """CG from Y = 0 with ``hvp`` (Y -> HY; None: linearise this performer's own gradient)."""
    f = _cg_objective(prob, design, cfg)
    y0 = _y_zero(prob, design)
    if hvp is None:
        g0, hvp = jax.linearize(jax.grad(f), y0)
        f0 = f(y0)
    else:
        f0, g0 = jax.value_and_grad(f)(y0)
    y, run = minimize_quadratic(hvp, -g0, f0, design.precondition, maxiter=cfg.maxiter, tol=cfg.tol)
    z = {"exprdirs": jnp.einsum("er,rvx->evx", design.q_basis, y)}
    return _finish(prob, z, run, jnp.asarray(False), cfg)


@jax.jit
def calibrate_simon_says(model: FlameModel, rig: SemanticRig, beta: jnp.ndarray, data: SimonSaysData,
                         combinations: Optional[jnp.ndarray] = None,
                         cfg: CalibrationConfig = CalibrationConfig()):
    """Calibrate one performer's rig. -> (CalibratedRig, CalibrationState).

    model: the generic FlameModel (its exprdirs are the starting point E0); rig: its
    SemanticRig (B0, g0); beta (<=S,) the performer's identity; data: :class:`SimonSaysData`;
    combinations (C, K) controls whose target is the uncalibrated rig's own output, or None.
    Runs ``cfg.maxiter`` iterations at most, stopping when f's gradient norm < ``cfg.tol``:
    conjugate gradients on the exact quadratic when only E is calibrated (``solver`` "cg"/"auto";
    see the comment above :func:`_cg_design`), else L-BFGS.
    """
    prob = _prepare(model, rig, beta, data, combinations, cfg)
    if _solver(cfg) == "lbfgs":
        return _solve_lbfgs(prob, cfg)
    return _solve_cg(prob, _cg_design(prob, cfg), None, cfg)


def calibrate_many(model: FlameModel, rig: SemanticRig, betas: jnp.ndarray, data: SimonSaysData,
                   combinations: Optional[jnp.ndarray] = None,
                   cfg: CalibrationConfig = CalibrationConfig()):
    """:func:`calibrate_simon_says` vmapped over performers: betas (M, S), data with a leading
    M axis (:func:`stack_data`); model, rig and combinations shared. Outputs gain the M axis.

    With the CG solver and one Simon-Says design for all performers (the same controls, expression
    ids and, when used, masks: the usual case, every performer acting the same prompts), the
    design's work is done once -- the span, the preconditioner, and the Hessian's linearisation,
    which does not depend on the identity or the geometry -- and only each performer's gradient
    and CG iterations are vmapped."""
    if _solver(cfg) == "cg" and _shared_design(data, cfg):
        return _calibrate_many_shared(model, rig, betas, data, combinations, cfg)
    return _calibrate_many(model, rig, betas, data, combinations, cfg)


def _shared_design(data: SimonSaysData, cfg: CalibrationConfig) -> bool:
    """True when every performer has the same controls, expression ids and (if used) masks
    (concrete arrays only: under a transformation the general path is taken)."""
    fields = [data.controls, data.expression] + ([data.weights] if cfg.use_masks else [])
    if any(isinstance(x, jax.core.Tracer) for x in fields):
        return False
    return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1])) for x in fields)


@jax.jit
def _calibrate_many(model, rig, betas, data, combinations, cfg):
    return jax.vmap(calibrate_simon_says, in_axes=(None, None, 0, 0, None, None))(
        model, rig, betas, data, combinations, cfg)


@jax.jit
def _calibrate_many_shared(model, rig, betas, data, combinations, cfg):
    first = _prepare(model, rig, betas[0], jax.tree_util.tree_map(lambda x: x[0], data), combinations, cfg)
    design = _cg_design(first, cfg)
    y0 = _y_zero(first, design)
    _, hvp = jax.linearize(jax.grad(_cg_objective(first, design, cfg)), y0)

    def one(beta, d):
        return _solve_cg(_prepare(model, rig, beta, d, combinations, cfg), design, hvp, cfg)

    return jax.vmap(one)(betas, data)


def stack_settings(configs: Sequence[CalibrationConfig]) -> CalibrationConfig:
    """G settings -> one CalibrationConfig with (G,) numeric leaves (for
    :func:`calibrate_settings`). Their static fields (parameters, maxiter, ...) must agree: they
    choose the compiled program."""
    configs = list(configs)
    if not configs:
        raise ValueError("stack_settings needs at least one CalibrationConfig")
    static = [dataclasses.replace(c, reg=0.0, w_combo=0.0, tol=0.0, use_masks=True, length=1.0) for c in configs]
    if any(s != static[0] for s in static):
        raise ValueError("calibration settings stacked for one vmapped program must share parameters, solver, "
                         "maxiter, history_size and linesearch (only reg, w_combo, tol, use_masks, length vary)")
    return jax.tree_util.tree_map(lambda *x: jnp.asarray(x), *configs)


@jax.jit
def calibrate_settings(model: FlameModel, rig: SemanticRig, beta: jnp.ndarray, data: SimonSaysData,
                       combinations: Optional[jnp.ndarray], cfgs: CalibrationConfig):
    """:func:`calibrate_simon_says` of one performer under G settings in one vmapped program
    (a sweep of the regulariser, say): cfgs from :func:`stack_settings`. Outputs gain the G axis."""
    return jax.vmap(lambda cfg: calibrate_simon_says(model, rig, beta, data, combinations, cfg))(cfgs)


def calibrated_model(model: FlameModel, calibrated: CalibratedRig) -> FlameModel:
    """The FLAME model with the calibrated expression basis: save it with
    :func:`flamejax.io.save_flame` (the semantic rig, if recalibrated, is ``calibrated.rig``)."""
    return model.with_exprdirs(calibrated.exprdirs)
