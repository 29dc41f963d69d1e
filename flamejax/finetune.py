"""Fine-tuning the tracker's rig through the tracker, by implicit differentiation (DESIGN.md 1.3,
the paper's Sec. 6).

A calibrated rig reproduces each Simon-Says expression, yet inverting it can still pick the wrong
controls (a well-behaved function can have an ill-conditioned inverse). Fine-tuning changes
theta_T, the rig the *tracker* inverts, so that tracking the Simon-Says geometry v_k returns the
intended controls c_k, while the reference rig theta_R (the calibrated one, which makes geometry
from controls) still reproduces v_k from them:

    L(theta_T) = w_controls * mean_k |T(v_k; theta_T) - c_k|^2                  (per control^2)
               + w_geometry * mean_k 1e6 wmean_v |R(T(v_k; theta_T); theta_R) - v_k|^2   (mm^2)
               + w_reg * |z|^2,   z = normalised (theta_T - theta_R)             (mm^2, as calibrate)

T(v; theta) = argmin_{c in [0,1]^K} f(c; theta, v) is rig inversion (:mod:`flamejax.track`), used
as a black box: only its solution c* and the rig's derivatives enter the gradient. On the controls
strictly inside the box (free set F) the solution satisfies grad_c f = 0, so

    dL/dtheta = -(d/dtheta <grad_c f(c*; theta), lambda>),   H_FF lambda_F = (dL/dc*)_F,  lambda_A = 0

one K x K solve (H = d2f/dc2, exact, at c*) and one VJP of the rig's gradient with respect to
theta: dR/dtheta (vertices x basis entries) is never formed, which is what lets the *full* rig
(the FLAME expression basis, E x V x 3, and the semantic basis B) be fine-tuned. Controls at a
bound stay there under small changes (strict complementarity), so their derivative is zero.

theta_T = :class:`TrackerRig` (exprdirs (E, V, 3) metres per unit coefficient, basis (P, K),
offset (P,) kept fixed). The optimiser works on z, theta's change normalised as in
:mod:`flamejax.calibrate` (exprdirs by L sqrt(V); B's row p by L / s_p), with scipy's L-BFGS-B
on the host (see "stages" below for why). Expression-basis changes are confined to the vertices the generic
basis moves, so the trackers' joint bookkeeping (:func:`flamejax.gauss_newton.active_joints`)
stays exact.

Stages (:class:`FinetuneStage`, run in order; the authors' four by default, see
``DEFAULT_STAGES``): which parameters move (B, the expression basis or both), which of B's
columns (primary controls; primary plus the controls the tracker wrongly turns on, "filtered";
each such tweaker column on its own, accepting a column's change only if the total error drops),
and whether the tracker may use every control or only the primary ones (a reduced rig).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from flamejax.calibrate import SimonSaysData, sample_weights, theta_scale
from flamejax.flame import FlameModel
from flamejax.gauss_newton import active_joints, grams
from flamejax.semantic.rig import SemanticRig
from flamejax.track import (MM2, InversionConfig, InversionProblem, InversionWeights, RigInversion,
                            inversion_problem, objective, rig_geometry)

TUNE = ("basis", "exprdirs", "both")
COLUMNS = ("primary", "filtered", "tweakers", "all")
TRACKER_CONTROLS = ("primary", "all")


class TrackerRig(NamedTuple):
    """theta_T: exprdirs (E, V, 3) the expression basis; basis (P, K) and offset (P,) the semantic rig."""

    exprdirs: jnp.ndarray
    basis: jnp.ndarray
    offset: jnp.ndarray


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FinetuneProblem:
    """Per performer constants (build with :func:`finetune_problem`, outside jit).

    inversion: the tracker's problem at theta_R (its grams, weights and tweakers); j_regressor
    (J, V); reference: theta_R; primary (K,) 0/1; support (V,) 0/1 vertices the expression basis
    may change at; scale (P,) s_p of B's rows (:func:`flamejax.calibrate.theta_scale`). Static:
    joints, the active joints of the grams."""

    inversion: InversionProblem
    j_regressor: jnp.ndarray
    reference: TrackerRig
    primary: jnp.ndarray
    support: jnp.ndarray
    scale: jnp.ndarray
    joints: tuple[int, ...] = dataclasses.field(default=(), metadata=dict(static=True))


def finetune_problem(model: FlameModel, rig: SemanticRig, shape=None, *, primary, tweakers=None,
                     exprdirs=None, vertex_weights=None) -> FinetuneProblem:
    """model: FLAME; rig: the reference semantic rig theta_R (no neck); shape (<=S,) the performer's
    identity; primary (K,) bool the Simon-Says controls; tweakers (K,) bool the penalised ones
    (default: not primary); exprdirs (E, V, 3): theta_R's expression basis (default the model's,
    e.g. a calibrated one from :func:`flamejax.calibrate.calibrate_simon_says`)."""
    primary = np.asarray(primary, bool)
    if primary.shape != (rig.n_controls,):
        raise ValueError(f"primary must be ({rig.n_controls},), got {primary.shape}")
    tweakers = ~primary if tweakers is None else tweakers
    inv = inversion_problem(model, rig, shape, tweakers=tweakers, vertex_weights=vertex_weights, exprdirs=exprdirs)
    e = model.n_expr
    reference = TrackerRig(jnp.swapaxes(inv.fixed.blenddirs[:e], 1, 2), rig.basis.astype(inv.fixed.dtype),
                           rig.offset.astype(inv.fixed.dtype))
    support = np.any(np.asarray(reference.exprdirs[:rig.n_expr]) != 0, axis=(0, 2))
    scale = theta_scale(model.with_exprdirs(reference.exprdirs), rig,
                        jnp.zeros((0,), inv.fixed.dtype) if shape is None else jnp.asarray(shape, inv.fixed.dtype))
    return FinetuneProblem(inv, model.j_regressor.astype(inv.fixed.dtype), reference,
                           jnp.asarray(primary, inv.fixed.dtype), jnp.asarray(support, inv.fixed.dtype), scale,
                           active_joints(inv.fixed, rig.n_expr))


def tracker_problem(fp: FinetuneProblem, theta: TrackerRig, *, regram: bool = True) -> InversionProblem:
    """The tracker's :class:`~flamejax.track.InversionProblem` for rig ``theta`` (traceable).
    regram=False keeps theta_R's grams: right when theta's expression basis is theta_R's, and
    enough for evaluating f (the grams only serve the solver's normal equations)."""
    inv = fp.inversion
    e = theta.exprdirs.shape[0]
    fixed = dataclasses.replace(
        inv.fixed,
        blenddirs=jnp.concatenate([jnp.swapaxes(theta.exprdirs, 1, 2), inv.fixed.blenddirs[e:]], 0),
        j_exprdirs=jnp.einsum("jv,evx->jxe", fp.j_regressor, theta.exprdirs))
    rig = dataclasses.replace(inv.rig, basis=theta.basis, offset=theta.offset)
    g = grams(fixed, rig.n_expr, fp.joints, inv.grams.weights) if regram else inv.grams
    return inv._replace(fixed=fixed, rig=rig, grams=g)


# ---------------------------------------------------------------- implicit differentiation


def _zero_cotangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


@jax.custom_vjp
def implicit_controls(theta: TrackerRig, fp: FinetuneProblem, target, weights: InversionWeights, solution,
                      ridge=1e-6, bound_tol=1e-4):
    """The tracker's solution ``solution`` (K,) for ``target`` (V, 3) under rig ``theta``, as a
    differentiable function of theta and target (module doc): the value is ``solution`` itself;
    the gradient is the implicit one. ridge: Tikhonov term of the K x K solve, relative to the
    mean curvature (B's null directions can leave H_FF singular); bound_tol: controls within it of
    0 or 1 count as at the bound."""
    return solution


def _implicit_fwd(theta, fp, target, weights, solution, ridge, bound_tol):
    return solution, (theta, fp, target, weights, solution, ridge, bound_tol)


def _implicit_bwd(res, cotangent):
    theta, fp, target, weights, c, ridge, bound_tol = res

    def f(c_, theta_, target_):
        return objective(tracker_problem(fp, theta_, regram=False), c_, target_, weights)

    free = ((c > bound_tol) & (c < 1.0 - bound_tol)).astype(c.dtype)
    h = jax.hessian(f)(c, theta, target)
    h_ff = h * free[:, None] * free[None, :]
    mu = ridge * jnp.mean(jnp.abs(jnp.diagonal(h))) + 1e-30
    # Active controls get an identity row: lambda_A = 0 since their cotangent entries are zeroed.
    system = h_ff + jnp.diag(1.0 - free + mu * free)
    lam = jnp.linalg.solve(system, free * cotangent)

    def directional(theta_, target_):  # <grad_c f(c; theta, target), lambda>
        return jax.jvp(lambda c_: f(c_, theta_, target_), (c,), (lam,))[1]

    g_theta, g_target = jax.grad(directional, argnums=(0, 1))(theta, target)
    neg = lambda x: -x  # noqa: E731
    return (jax.tree_util.tree_map(neg, g_theta), jax.tree_util.tree_map(_zero_cotangent, fp), -g_target,
            jax.tree_util.tree_map(_zero_cotangent, weights), jnp.zeros_like(c),
            _zero_cotangent(ridge), _zero_cotangent(bound_tol))


implicit_controls.defvjp(_implicit_fwd, _implicit_bwd)


# ---------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class FinetuneStage:
    """One stage. tune: what of theta_T moves ("basis": B; "exprdirs": the expression basis;
    "both"); columns: which of B's columns move ("primary"; "filtered": primary plus the controls
    the tracker turns on above ``filter_threshold`` on some Simon-Says sample where they are not
    intended; "tweakers": each such non-primary column, one at a time, a change kept only if the
    total error drops; "all"); tracker_controls: "primary" (a reduced rig: the other columns of
    theta_T are zero while tracking) or "all"; maxiter: L-BFGS iterations (per column for
    "tweakers")."""

    name: str
    tune: str = "basis"
    columns: str = "primary"
    tracker_controls: str = "all"
    maxiter: int = 20

    def __post_init__(self):
        for field, allowed in (("tune", TUNE), ("columns", COLUMNS), ("tracker_controls", TRACKER_CONTROLS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"stage {self.name!r}: {field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.maxiter < 1:
            raise ValueError(f"stage {self.name!r}: maxiter must be >= 1, got {self.maxiter}")


DEFAULT_STAGES = (
    FinetuneStage("primary, reduced rig", tune="basis", columns="primary", tracker_controls="primary"),
    FinetuneStage("full rig", tune="both", columns="primary"),
    FinetuneStage("full rig, filtered controls", tune="both", columns="filtered"),
    FinetuneStage("tweakers one at a time", tune="basis", columns="tweakers", maxiter=5),
)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """w_controls, w_geometry, w_reg: g1, g2, g_eps of the module doc; weights / inversion: the
    tracker's objective weights and solver settings (as used when tracking); filter_threshold:
    a control above it counts as on; ridge, bound_tol: see :func:`implicit_controls`; length: L
    (metres) of the normalisation; tol: L-BFGS gradient-norm tolerance; stages: run in order."""

    stages: tuple[FinetuneStage, ...] = DEFAULT_STAGES
    w_controls: float = 1.0
    w_geometry: float = 1.0
    w_reg: float = 1e-2
    weights: InversionWeights = InversionWeights()
    inversion: InversionConfig = InversionConfig()
    filter_threshold: float = 0.05
    ridge: float = 1e-6
    bound_tol: float = 1e-4
    length: float = 1e-3
    tol: float = 1e-4

    def __post_init__(self):
        for name in ("w_controls", "w_geometry", "w_reg", "ridge", "bound_tol", "tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.length > 0:
            raise ValueError(f"length must be > 0, got {self.length}")


class FinetuneState(NamedTuple):
    """iter_num () L-BFGS iterations over all stages; value () final L; error () last stage's
    gradient norm; stage_values (S + 1,) L before the first stage and after each; stage_iters (S,);
    columns (S,) how many of B's columns each stage could move; accepted (S,) columns whose change
    was kept (stages with columns="tweakers"; else -1); controls_before / controls_after (N, K)
    the tracker's solutions on the samples with theta_R and with the result."""

    iter_num: jnp.ndarray
    value: jnp.ndarray
    error: jnp.ndarray
    stage_values: jnp.ndarray
    stage_iters: jnp.ndarray
    columns: jnp.ndarray
    accepted: jnp.ndarray
    controls_before: jnp.ndarray
    controls_after: jnp.ndarray


# ---------------------------------------------------------------- objective


def _unpack(z: dict, fp: FinetuneProblem, length) -> TrackerRig:
    ref = fp.reference
    n_v = ref.exprdirs.shape[1]
    exprdirs = ref.exprdirs + z["exprdirs"] * (fp.support[None, :, None] * (length * np.sqrt(n_v)))
    basis = ref.basis + z["basis"] * (length / fp.scale)[:, None]
    return TrackerRig(exprdirs, basis, ref.offset)


def _normalise(theta: TrackerRig, fp: FinetuneProblem, length) -> dict:
    ref = fp.reference
    n_v = ref.exprdirs.shape[1]
    return {"exprdirs": (theta.exprdirs - ref.exprdirs) * fp.support[None, :, None] / (length * np.sqrt(n_v)),
            "basis": (theta.basis - ref.basis) * (fp.scale / length)[:, None]}


class _Context(NamedTuple):
    """What a stage's objective needs besides z: sample weights (N,), the tracker's control mask
    (K,) (a reduced rig zeroes the other columns), and the grams of the stage's expression basis
    (used when the stage does not move it)."""

    fp: FinetuneProblem
    data: SimonSaysData
    sample_w: jnp.ndarray
    tracker_mask: jnp.ndarray
    grams: object


def _solve(ctx: _Context, theta_t: TrackerRig, cfg: FinetuneConfig, regram: bool):
    """The black-box tracker on every sample: (N, K), no gradient."""
    problem = tracker_problem(ctx.fp, jax.lax.stop_gradient(theta_t), regram=regram)
    if not regram:
        problem = problem._replace(grams=ctx.grams)
    solver = RigInversion(cfg.inversion)
    init = jnp.zeros((problem.rig.n_controls,), problem.fixed.dtype)
    solve = jax.vmap(lambda y: solver.run(init, problem, y, cfg.weights)[0])
    return jax.lax.stop_gradient(solve(ctx.data.vertices))


class LossTerms(NamedTuple):
    """The three terms of L (module doc), unweighted: controls (per control^2), geometry (mm^2),
    reg (normalised, mm^2)."""

    controls: jnp.ndarray
    geometry: jnp.ndarray
    reg: jnp.ndarray


def _terms(z, ctx: _Context, cfg: FinetuneConfig, regram: bool) -> LossTerms:
    fp, data = ctx.fp, ctx.data
    theta = _unpack(z, fp, cfg.length)
    theta_t = theta._replace(basis=theta.basis * ctx.tracker_mask[None, :])
    c_star = _solve(ctx, theta_t, cfg, regram)
    c = jax.vmap(lambda y, cs: implicit_controls(theta_t, fp, y, cfg.weights, cs, cfg.ridge, cfg.bound_tol))(
        data.vertices, c_star)
    total = jnp.maximum(jnp.sum(ctx.sample_w), 1e-30)
    controls = jnp.sum(ctx.sample_w * jnp.sum((c - data.controls) ** 2, -1)) / total
    m = fp.inversion.grams.weights
    out = jax.vmap(lambda ci: rig_geometry(fp.inversion, ci))(c)
    ms = MM2 * jnp.sum(m * jnp.sum((out - data.vertices) ** 2, -1), -1) / jnp.sum(m)
    geometry = jnp.sum(ctx.sample_w * ms) / total
    zn = _normalise(theta, fp, cfg.length)
    return LossTerms(controls, geometry, jnp.sum(zn["exprdirs"] ** 2) + jnp.sum(zn["basis"] ** 2))


def _loss(z, ctx: _Context, cfg: FinetuneConfig, regram: bool):
    t = _terms(z, ctx, cfg, regram)
    return cfg.w_controls * t.controls + cfg.w_geometry * t.geometry + cfg.w_reg * t.reg


def _context(fp: FinetuneProblem, theta: TrackerRig, data: SimonSaysData, tracker_mask) -> _Context:
    g = tracker_problem(fp, theta).grams
    return _Context(fp, data, sample_weights(data.expression, fp.inversion.fixed.dtype), tracker_mask, g)


def _evaluate_impl(theta: TrackerRig, fp: FinetuneProblem, data: SimonSaysData, cfg: FinetuneConfig):
    ctx = _context(fp, theta, data, jnp.ones_like(fp.primary))
    return _terms(_normalise(theta, fp, cfg.length), ctx, cfg, False), _solve(ctx, theta, cfg, False)


_evaluate = jax.jit(_evaluate_impl, static_argnames=("cfg",))


def loss_terms(theta: TrackerRig, fp: FinetuneProblem, data: SimonSaysData, cfg: FinetuneConfig = FinetuneConfig()):
    """-> (:class:`LossTerms` at ``theta`` with every control available to the tracker, the
    tracker's solutions (N, K) on the samples)."""
    return _evaluate(theta, fp, data, cfg=_compiled(cfg))


# ---------------------------------------------------------------- stages
#
# The stage loop runs on the host (scipy's L-BFGS-B, float64) around one compiled value-and-
# gradient of L: every evaluation is a full tracking of the samples plus their adjoints, so the
# host loop costs nothing next to it, while compiling the optimiser around that program (jaxopt's
# line search traces it several times, once more per stage) took minutes and gigabytes. What a
# stage moves is a mask (data, not code), so every stage reuses one of two compiled programs:
# with and without the grams rebuilt from the current expression basis.


def _masked_loss(z, ctx: _Context, free_e, columns, cfg: FinetuneConfig, regram: bool):
    # Frozen parts of z enter through stop_gradient: their gradient is exactly zero.
    keep = lambda x, m: m * x + (1 - m) * jax.lax.stop_gradient(x)  # noqa: E731
    z = {"exprdirs": keep(z["exprdirs"], free_e), "basis": keep(z["basis"], columns[None, :])}
    return _loss(z, ctx, cfg, regram)


_value_and_grad = jax.jit(jax.value_and_grad(_masked_loss), static_argnames=("cfg", "regram"))


def _compiled(cfg: FinetuneConfig) -> FinetuneConfig:
    """The part of the config compiled programs depend on: the stages are host-side only, so
    changing them (a stage sweep, an ablation) reuses the compiled programs."""
    return dataclasses.replace(cfg, stages=())


def _spurious(ctx: _Context, z, cfg: FinetuneConfig) -> np.ndarray:
    """(K,) bool: controls the tracker turns on (> filter_threshold) on a sample not intending them."""
    theta = _unpack(z, ctx.fp, cfg.length)
    c = np.asarray(_solve_jit(ctx, theta._replace(basis=theta.basis * ctx.tracker_mask[None, :]), cfg=cfg))
    data = ctx.data
    on = (c > cfg.filter_threshold) & (np.asarray(data.controls) <= 0) & (np.asarray(data.expression) >= 0)[:, None]
    return np.any(on, 0) & (np.asarray(ctx.tracker_mask) > 0)


_solve_jit = jax.jit(lambda ctx, theta, cfg: _solve(ctx, theta, cfg, False), static_argnames=("cfg",))


def _minimise(z: dict, ctx: _Context, free_e: float, columns: np.ndarray, cfg: FinetuneConfig, regram: bool,
              maxiter: int):
    """scipy L-BFGS-B over the free part of z. -> (z, value, iterations, gradient norm)."""
    from scipy.optimize import minimize

    flat0, unravel = ravel_pytree(z)
    dtype = flat0.dtype
    cols = jnp.asarray(columns, dtype)
    fe = jnp.asarray(free_e, dtype)

    def fun(x):
        value, grad = _value_and_grad(unravel(jnp.asarray(x, dtype)), ctx, fe, cols, cfg=cfg, regram=regram)
        return float(value), np.asarray(ravel_pytree(grad)[0], np.float64)

    res = minimize(fun, np.asarray(flat0, np.float64), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=maxiter, gtol=cfg.tol, ftol=1e-10))
    return unravel(jnp.asarray(res.x, dtype)), float(res.fun), int(res.nit), float(np.max(np.abs(res.jac)))


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """jaxopt-shaped fine-tuning of the tracker's rig (module doc)."""

    config: FinetuneConfig = FinetuneConfig()

    def run(self, init: Optional[TrackerRig], problem: FinetuneProblem, data: SimonSaysData, progress=None):
        """init: theta_T to start from (None: theta_R); data: the Simon-Says samples
        (:func:`flamejax.calibrate.simon_says_data`; controls (N, K) intended, vertices (N, V, 3)
        tracked, canonical pose; their masks are not used); progress: optional callable(stage
        name, value) after each stage -> (TrackerRig, FinetuneState)."""
        stages, cfg = self.config.stages, _compiled(self.config)
        n_v = problem.inversion.fixed.rest.shape[1]
        if data.vertices.shape[1:] != (n_v, 3) or data.controls.shape[1:] != problem.primary.shape:
            raise ValueError(f"data must be controls (N, {problem.primary.shape[0]}) and vertices (N, {n_v}, 3), "
                             f"got {data.controls.shape} and {data.vertices.shape}")
        dt = problem.inversion.fixed.dtype
        data = SimonSaysData(jnp.asarray(data.controls, dt), jnp.asarray(data.vertices, dt),
                             jnp.asarray(data.weights, dt), jnp.asarray(data.expression, jnp.int32))
        theta = problem.reference if init is None else TrackerRig(*(jnp.asarray(x, dt) for x in init))
        z = _normalise(theta, problem, cfg.length)
        terms, before = loss_terms(theta, problem, data, cfg)
        values, iters, columns, accepted, err = [self._total(terms)], [], [], [], 0.0
        primary = np.asarray(problem.primary) > 0
        for stage in stages:
            mask = problem.primary if stage.tracker_controls == "primary" else jnp.ones_like(problem.primary)
            ctx = _context_jit(problem, _unpack(z, problem, cfg.length), data, mask)
            free_e = 1.0 if stage.tune in ("exprdirs", "both") else 0.0
            use_b = stage.tune in ("basis", "both")
            regram = free_e > 0
            spurious = _spurious(ctx, z, cfg)
            cols = {"primary": primary, "all": np.ones_like(primary), "filtered": primary | spurious,
                    "tweakers": spurious & ~primary}[stage.columns] & use_b
            if stage.columns != "tweakers":
                z, _, it, err = _minimise(z, ctx, free_e, cols, cfg, regram, stage.maxiter)
                kept = -1
            else:  # one column at a time; a change is kept only if the total error drops
                value = float(_value_and_grad(z, ctx, jnp.asarray(free_e, dt), jnp.zeros_like(problem.primary),
                                              cfg=cfg, regram=regram)[0])
                it, kept = 0, 0
                for j in np.flatnonzero(cols):
                    new, v, n, e = _minimise(z, ctx, free_e, np.arange(len(cols)) == j, cfg, regram, stage.maxiter)
                    it += n
                    if v < value:
                        z, value, kept, err = new, v, kept + 1, e
            terms, after = loss_terms(_unpack(z, problem, cfg.length), problem, data, cfg)
            values.append(self._total(terms))
            iters.append(it)
            columns.append(int(np.sum(cols)))
            accepted.append(kept)
            if progress is not None:
                progress(stage.name, float(values[-1]))
        state = FinetuneState(jnp.asarray(sum(iters)), values[-1], jnp.asarray(err, dt), jnp.stack(values),
                              jnp.asarray(iters, jnp.int32), jnp.asarray(columns, jnp.int32),
                              jnp.asarray(accepted, jnp.int32), before, after if stages else before)
        return _unpack(z, problem, cfg.length), state

    def _total(self, t: LossTerms):
        c = self.config
        return c.w_controls * t.controls + c.w_geometry * t.geometry + c.w_reg * t.reg


_context_jit = jax.jit(_context)
