#!/usr/bin/env python3
"""Benchmark the method (issue 4) in one run on the same inputs: tracking, calibration, fine-tuning.

    .venv/bin/python scripts/bench_method.py                         # every section, full sizes
    .venv/bin/python scripts/bench_method.py --sections track,calibrate --json bench.json
    .venv/bin/python scripts/bench_method.py --quick                 # smoke test (< ~1 min)

Inputs: the default synthetic world (``WorldConfig(n_performers=1)``, size ``--size``, cached under
``--cache``); only its generic model is built when the calibration section is not run (the same
model: ``make_world`` builds it with ``make_generic_semantic_model(seed, size, names)``).

1. tracking (flamejax.track.track_controls, float32): targets are the generic rig's own meshes at
   Simon-Says-like controls (random intensities) plus 0.2 mm Gaussian noise, solved for 1, 100,
   10,000 frames. Frames/s after compilation (the first call, with compilation, is reported
   separately). The baseline is a straightforward per-frame solver: scipy's L-BFGS-B on the SAME
   objective (flamejax.track.objective) in float64 with a jitted value-and-gradient, one frame at a
   time. It runs ~12 frames/s, so it is timed on the first min(n, --baseline-frames) frames of the
   same targets; its frames/s is the rate on those frames. Both objectives are evaluated in float64
   on the frames both solved; ours must be <= the baseline's + tolerance. Target: >= 50x.
2. calibration (flamejax.calibrate, Simon-Says, tracker OS1's geometry of the world's performer):
   one performer (compilation separately, then the run; the default solver, CG on the exact
   quadratic, and for reference jaxopt's L-BFGS on the same objective), then ``calibrate_many`` on
   8 and 64 copies of that performer's data (each copy with its own 0.1 mm noise: the same Simon-Says
   design, so the design's work is shared) in one vmapped call, as a ratio to one; at the smallest
   batch also the plain vmap of the one-performer solver. Targets: one performer < 10 s; 64
   performers < 10x one.
3. fine-tuning: seconds per stage from the calibrated rig, and one gradient of L (implicit adjoint)
   against the direct method that materialises dc/dtheta (see :func:`bench_finetune`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.semantic.controls import load_control_set
from flamejax.synthetic.semantic_model import make_generic_semantic_model
from flamejax.track import InversionWeights, inversion_problem, objective, rig_geometry, track_controls

SECTIONS = ("track", "calibrate", "finetune")
TRACK_SPEEDUP_TARGET = 50.0      # tracking frames/s, ours / baseline
CALIBRATION_SECONDS_TARGET = 10.0  # one performer
VMAP_RATIO_TARGET = 10.0         # 64 performers in one vmapped call / one performer
VMAP_TARGET_PERFORMERS = 64
WEIGHTS = InversionWeights(l1=1e-3, tweaker=1e-2)
WARMUP_FRAMES = 64               # tracking's first (compiling) call on at most this many frames
OBJECTIVE_RTOL, OBJECTIVE_ATOL = 1e-4, 1e-6  # float32 solution evaluated in float64 vs scipy's float64

FULL = dict(frames=[1, 100, 10_000], baseline_frames=40, batches=[8, 64])
QUICK = dict(frames=[1, 10, 100], baseline_frames=3, batches=[2])


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def x64():
    """float64 inside (the baseline and the objective comparison), float32 outside."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


def repeat_timed(fn, min_total_s: float = 1.0, max_repeats: int = 20) -> tuple[float, Any]:
    """Median seconds of ``fn()`` (already compiled) over repeats lasting >= ``min_total_s`` in all
    (at least one, at most ``max_repeats``), and the last result."""
    times, out = [], None
    while not times or (sum(times) < min_total_s and len(times) < max_repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, columns right-aligned."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, width))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in width)] + [line(r) for r in cells[1:]])


def yes_no(ok: bool) -> str:
    return "yes" if ok else "NO"


def machine() -> dict[str, Any]:
    import jaxlib
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus_usable = os.cpu_count()
    cpu_name = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    return dict(platform=platform.platform(), cpu=cpu_name or platform.machine(), cpu_count=os.cpu_count(),
                cpus_usable=cpus_usable, python=platform.python_version(), jax=jax.__version__,
                jaxlib=jaxlib.__version__, devices=[str(d) for d in jax.devices()],
                backend=jax.default_backend(), load_average_start=list(os.getloadavg()))


# ---------------------------------------------------------------- inputs


@dataclasses.dataclass
class Setup:
    size: str
    control_set: Any
    generic: Any                 # GenericSemanticModel (model, rig, target, ...)
    world: Optional[Any] = None  # the synthetic World, when a section needs performers


def make_setup(size: str, need_world: bool, cache: Optional[str]) -> Setup:
    if need_world:
        from flamejax.synthetic.world import WorldConfig, load_or_make_world
        world = load_or_make_world(WorldConfig(n_performers=1, size=size), cache_dir=cache or None)
        return Setup(size, world.control_set, world.generic, world)
    cs = load_control_set("metahuman")  # WorldConfig's default control set
    return Setup(size, cs, make_generic_semantic_model(0, size, cs.names))  # WorldConfig's seed 0


# ---------------------------------------------------------------- 1. tracking


def make_targets(cs, problem, n: int, seed: int = 0) -> np.ndarray:
    """(n, V, 3) float64 metres: the rig at Simon-Says targets of random intensity, + 0.2 mm noise."""
    rng = np.random.default_rng(seed)
    c = cs.simon_says.targets[np.arange(n) % len(cs.simon_says.targets)] * rng.uniform(0.3, 1.0, (n, 1))
    geometry = np.asarray(jax.jit(jax.vmap(lambda x: rig_geometry(problem, x)))(jnp.asarray(c, jnp.float32)))
    return geometry + rng.normal(0, 2e-4, geometry.shape)


def problem_float64(setup: Setup):
    gen = setup.generic
    rig64 = dataclasses.replace(gen.rig, basis=jnp.asarray(gen.rig.basis, jnp.float64),
                                offset=jnp.asarray(gen.rig.offset, jnp.float64))
    return inversion_problem(gen.model.astype(jnp.float64), rig64, tweakers=setup.control_set.tweaker_mask)


def scipy_baseline(problem64, targets: np.ndarray, weights: InversionWeights) -> tuple[np.ndarray, np.ndarray]:
    """scipy L-BFGS-B on flamejax.track.objective, float64, one frame at a time, from zeros, in
    [0, 1]^K (the jitted value-and-gradient compiled outside the timing).
    -> (seconds per frame (n,), objective values (n,))."""
    from scipy.optimize import minimize
    k = problem64.rig.n_controls
    f = jax.jit(jax.value_and_grad(lambda x, y: objective(problem64, x, y, weights)))
    jax.block_until_ready(f(jnp.zeros(k), jnp.asarray(targets[0])))
    seconds, values = [], []
    for y in targets:
        t = time.perf_counter()
        y = jnp.asarray(y, jnp.float64)
        res = minimize(lambda x: tuple(np.asarray(v, np.float64) for v in f(jnp.asarray(x), y)), np.zeros(k),
                       jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * k,
                       options=dict(maxiter=15000, maxfun=30000, ftol=1e-12, gtol=1e-8))
        seconds.append(time.perf_counter() - t)
        values.append(res.fun)
    return np.asarray(seconds), np.asarray(values)


def bench_track(setup: Setup, frames: list[int], baseline_frames: int) -> dict[str, Any]:
    gen, cs = setup.generic, setup.control_set
    problem = inversion_problem(gen.model, gen.rig, tweakers=cs.tweaker_mask)
    targets = make_targets(cs, problem, max(frames))
    n_base = min(max(frames), baseline_frames)
    print(f"\n== 1. tracking: rig inversion, {gen.model.n_vertices} vertices, K={gen.rig.n_controls}, "
          f"weights l1={WEIGHTS.l1} tweaker={WEIGHTS.tweaker}")

    with x64():
        problem64 = problem_float64(setup)
        base_s, base_f = scipy_baseline(problem64, targets[:n_base], WEIGHTS)
        f64 = jax.jit(jax.vmap(lambda c, y: objective(problem64, c, y, WEIGHTS)))
    print(f"baseline: scipy L-BFGS-B, float64, per frame, timed on the first min(n, {baseline_frames}) frames "
          f"of the same targets (it is slow): {n_base / base_s.sum():.1f} frames/s over {n_base} frames")

    runs = []
    for n in frames:
        y = jnp.asarray(targets[:n], jnp.float32)
        # First call (compiles): on all n frames, or on the first WARMUP_FRAMES of them when n is larger
        # (sequences longer than one pool width all run the same compiled chunk program).
        warm = y if n <= WARMUP_FRAMES else y[:WARMUP_FRAMES]
        t = time.perf_counter()
        jax.block_until_ready(track_controls(problem, warm, WEIGHTS))
        first_s = time.perf_counter() - t
        run_s, (controls, state) = repeat_timed(lambda: track_controls(problem, y, WEIGHTS))
        compile_s = max(first_s - run_s * len(warm) / n, 0.0)
        m = min(n, n_base)
        with x64():
            ours_f = np.asarray(f64(jnp.asarray(controls[:m], jnp.float64), jnp.asarray(targets[:m])))
        ours_mean, base_mean = float(ours_f.mean()), float(base_f[:m].mean())
        tol = OBJECTIVE_RTOL * abs(base_mean) + OBJECTIVE_ATOL
        fps, base_fps = n / run_s, m / float(base_s[:m].sum())
        objective_ok = ours_mean <= base_mean + tol
        runs.append(dict(
            frames=n, fps=fps, run_s=run_s, first_call_s=first_s, first_call_frames=len(warm), compile_s=compile_s,
            baseline_frames=m, baseline_fps=base_fps, ratio=fps / base_fps,
            objective_ours=ours_mean, objective_baseline=base_mean, objective_tol=tol,
            objective_ok=bool(objective_ok), frames_worse=int(np.sum(ours_f > base_f[:m] + tol)),
            gn_iterations_median=float(np.median(state.iter_num)), gn_iterations_max=int(np.max(state.iter_num)),
            target_met=bool(fps / base_fps >= TRACK_SPEEDUP_TARGET and objective_ok)))
        print(f"  {n} frames: {fps:.1f} frames/s, first call {first_s:.2f} s", flush=True)

    print(table(
        ["frames", "ours f/s", "compile s", "baseline f/s", "(on frames)", "ratio",
         f">= {TRACK_SPEEDUP_TARGET:.0f}x", "obj ours", "obj baseline", "tol", "obj ok", "GN it med/max"],
        [[r["frames"], f"{r['fps']:.1f}", f"{r['compile_s']:.2f}", f"{r['baseline_fps']:.1f}", r["baseline_frames"],
          f"{r['ratio']:.1f}x", yes_no(r["ratio"] >= TRACK_SPEEDUP_TARGET), f"{r['objective_ours']:.6f}",
          f"{r['objective_baseline']:.6f}", f"{r['objective_tol']:.1e}", yes_no(r["objective_ok"]),
          f"{r['gn_iterations_median']:.0f}/{r['gn_iterations_max']}"] for r in runs]))
    print(f"compile s = first call (on min(n, {WARMUP_FRAMES}) frames) minus the run's time for as many frames; "
          "ours f/s: median over calls lasting >= 1 s in all (one call when one lasts longer)")
    print("objective: mean over the frames both solved, mm^2, float64 (ours: float32 controls); "
          f"ok = ours <= baseline + tol (tol = {OBJECTIVE_RTOL:g} x baseline + {OBJECTIVE_ATOL:g})")
    print(f"tracking target (>= {TRACK_SPEEDUP_TARGET:.0f}x the baseline at equal or lower objective): "
          + ", ".join(f"{r['frames']} frames {yes_no(r['target_met'])}" for r in runs))
    return dict(weights=WEIGHTS._asdict(), n_vertices=gen.model.n_vertices, n_controls=gen.rig.n_controls,
                baseline=dict(method="scipy L-BFGS-B, float64, per frame", frames=n_base,
                              fps=n_base / float(base_s.sum()), objective_mean=float(base_f.mean())),
                target_speedup=TRACK_SPEEDUP_TARGET, runs=runs)


# ---------------------------------------------------------------- 2. calibration


def rms_mm(a, b) -> float:
    """Per frame RMS distance over vertices, mean over frames, in mm."""
    return 1e3 * float(np.mean(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, -1), -1))))


def bench_calibrate(setup: Setup, batches: list[int], repeats: int = 3) -> dict[str, Any]:
    from flamejax.calibrate import (CalibrationConfig, _calibrate_many, _shared_design, calibrate_many,
                                    calibrate_simon_says, simon_says_data)
    from flamejax.semantic.rig import rig_vertices_frames
    from flamejax.synthetic.performers import performer_vertices
    from flamejax.synthetic.world import simon_says_masks, tracked_geometry

    world = setup.world
    model, rig, target = world.generic.model, world.generic.rig, world.generic.target
    name = next(iter(world.performers))
    performer, seq = world.performers[name], world.sequences[name]["simon_says"]
    data = simon_says_data(seq.controls, tracked_geometry(world, "OS1", name, "simon_says"), seq.hold,
                           simon_says_masks(world), "mean")
    combos = jnp.asarray(world.control_set.simon_says.combination_targets)
    beta = jnp.asarray(performer.beta, model.dtype)
    cfg = CalibrationConfig()
    print(f"\n== 2. calibration: Simon-Says, V={model.n_vertices}, E={model.n_expr}, K={rig.n_controls}, "
          f"N={len(data.expression)} expressions, C={len(combos)} combinations (tracker OS1, performer {name})")

    t = time.perf_counter()
    compiled = calibrate_simon_says.lower(model, rig, beta, data, combos, cfg).compile()
    compile_s = time.perf_counter() - t
    run_s, (out, state) = repeat_timed(lambda: compiled(model, rig, beta, data, combos, cfg),
                                       min_total_s=0.0, max_repeats=repeats)
    before, after = 1e3 * np.asarray(state.residual_before), 1e3 * np.asarray(state.residual_after)

    def truth(controls):  # the performer's canonical geometry (zero head pose) at the intended controls
        zeros = np.zeros((len(controls), 3))
        return performer_vertices(model, target, performer, controls, zeros, zeros)

    geometry = {}
    for take, controls in (("simon_says", np.asarray(data.controls)), ("rom1", world.sequences[name]["rom1"].controls)):
        c = jnp.asarray(controls, model.dtype)
        true = truth(controls)
        geometry[take] = dict(
            generic_mm=rms_mm(rig_vertices_frames(model, rig, c, shape=beta), true),
            calibrated_mm=rms_mm(rig_vertices_frames(model, out.rig, c, shape=beta, exprdirs=out.exprdirs), true))

    one = dict(compile_s=compile_s, run_s=run_s, compile_plus_run_s=compile_s + run_s, solver="cg",
               iterations=int(state.iter_num), value_before=float(state.history[0]), value_after=float(state.value),
               gradient_norm=float(state.error), stalled=bool(state.stalled), residual_before_mm=float(before.mean()),
               residual_after_mm=float(after.mean()), geometry_vs_truth=geometry,
               target_met=bool(run_s < CALIBRATION_SECONDS_TARGET))

    # the previous solver on the same problem, for reference: jaxopt L-BFGS on the same objective
    cfg_lbfgs = dataclasses.replace(cfg, solver="lbfgs")
    t = time.perf_counter()
    compiled_lbfgs = calibrate_simon_says.lower(model, rig, beta, data, combos, cfg_lbfgs).compile()
    lbfgs_compile_s = time.perf_counter() - t
    lbfgs_s, (_, st_lbfgs) = repeat_timed(lambda: compiled_lbfgs(model, rig, beta, data, combos, cfg_lbfgs),
                                          min_total_s=0.0, max_repeats=repeats)
    lbfgs = dict(compile_s=lbfgs_compile_s, run_s=lbfgs_s, iterations=int(st_lbfgs.iter_num),
                 value_after=float(st_lbfgs.value), gradient_norm=float(st_lbfgs.error))

    rng = np.random.default_rng(0)
    many = []
    for m in batches:
        batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), data)
        batch = batch._replace(vertices=batch.vertices + jnp.asarray(
            rng.normal(0, 1e-4, batch.vertices.shape), model.dtype))  # each copy its own data
        betas = jnp.broadcast_to(beta, (m,) + beta.shape)
        t = time.perf_counter()
        jax.block_until_ready(calibrate_many(model, rig, betas, batch, combos, cfg))
        first_s = time.perf_counter() - t
        run_m, (_, st) = repeat_timed(lambda: calibrate_many(model, rig, betas, batch, combos, cfg),
                                      min_total_s=0.0, max_repeats=1)
        ratio = run_m / run_s
        many.append(dict(performers=m, path="shared design" if _shared_design(batch, cfg) else "per performer",
                         run_s=run_m, first_call_s=first_s, compile_s=max(first_s - run_m, 0.0),
                         ratio_to_one=ratio, seconds_per_performer=run_m / m,
                         iterations_min=int(st.iter_num.min()), iterations_max=int(st.iter_num.max()),
                         target_met=bool(ratio < VMAP_RATIO_TARGET) if m == VMAP_TARGET_PERFORMERS else None))
        if m == min(batches):   # what sharing the design buys: the plain vmap of the one-performer solver
            t = time.perf_counter()
            jax.block_until_ready(_calibrate_many(model, rig, betas, batch, combos, cfg))
            first_s = time.perf_counter() - t
            run_m, (_, st) = repeat_timed(lambda: _calibrate_many(model, rig, betas, batch, combos, cfg),
                                          min_total_s=0.0, max_repeats=1)
            many.append(dict(performers=m, path="plain vmap", run_s=run_m, first_call_s=first_s,
                             compile_s=max(first_s - run_m, 0.0), ratio_to_one=run_m / run_s,
                             seconds_per_performer=run_m / m, iterations_min=int(st.iter_num.min()),
                             iterations_max=int(st.iter_num.max()), target_met=None))

    print(table(["performers", "solver / path", "compile s", "run s", "ratio to one", "s / performer", "iterations",
                 "target", "met"],
                [[1, "cg", f"{compile_s:.2f}", f"{run_s:.3f}", "1.00x", f"{run_s:.3f}", one["iterations"],
                  f"< {CALIBRATION_SECONDS_TARGET:.0f} s", yes_no(one["target_met"])],
                 [1, "lbfgs (reference)", f"{lbfgs_compile_s:.2f}", f"{lbfgs_s:.3f}", f"{lbfgs_s / run_s:.2f}x",
                  f"{lbfgs_s:.3f}", lbfgs["iterations"], "-", "-"]]
                + [[r["performers"], r["path"], f"{r['compile_s']:.2f}", f"{r['run_s']:.3f}", f"{r['ratio_to_one']:.2f}x",
                    f"{r['seconds_per_performer']:.3f}", f"{r['iterations_min']}-{r['iterations_max']}",
                    f"< {VMAP_RATIO_TARGET:.0f}x" if r["target_met"] is not None else "-",
                    yes_no(r["target_met"]) if r["target_met"] is not None else "-"] for r in many]))
    print(f"one performer: run = median of {repeats} calls of the compiled program; compile + run "
          f"{one['compile_plus_run_s']:.2f} s ({'under' if one['compile_plus_run_s'] < CALIBRATION_SECONDS_TARGET else 'over'} "
          f"{CALIBRATION_SECONDS_TARGET:.0f} s); batches: one call after a first call with compilation; a vmapped while_loop runs "
          "until its slowest performer stops")
    print(f"objective {one['value_before']:.4f} -> {one['value_after']:.4f} mm^2 (gradient norm "
          f"{one['gradient_norm']:.1e}; L-BFGS after {lbfgs['iterations']} iterations: {lbfgs['value_after']:.4f}, "
          f"gradient norm {lbfgs['gradient_norm']:.1e}); "
          f"Simon-Says masked RMS {one['residual_before_mm']:.3f} -> {one['residual_after_mm']:.3f} mm; "
          "geometry vs truth (all vertices RMS): " + ", ".join(
              f"{k} {v['generic_mm']:.3f} -> {v['calibrated_mm']:.3f} mm" for k, v in geometry.items()))
    if not any(r["performers"] == VMAP_TARGET_PERFORMERS for r in many):
        print(f"(the {VMAP_TARGET_PERFORMERS}-performer target is not measured at these batch sizes)")
    return dict(one=one, lbfgs=lbfgs, many=many, target_seconds=CALIBRATION_SECONDS_TARGET,
                target_vmap_ratio=VMAP_RATIO_TARGET)


# ---------------------------------------------------------------- 3. fine-tuning


def bench_finetune(setup: Setup, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """Seconds for each fine-tuning stage (flamejax.finetune) from the calibrated rig, and the cost
    of one gradient of L: ours (implicit adjoint: one K x K solve and one VJP per sample) against
    the straightforward direct method, which materialises dc/dtheta by forward mode (one JVP per
    parameter) -- measured on stage 1's parameters (B's primary columns, the authors' reduced rig)
    for one sample, and scaled to the samples; for the full rig only its size is computed."""
    from flamejax import finetune as ft
    from flamejax.calibrate import CalibrationConfig, calibrate_simon_says, simon_says_data
    from flamejax.synthetic.world import simon_says_masks, tracked_geometry

    world = setup.world
    model, rig, cs = world.generic.model, world.generic.rig, world.control_set
    name = next(iter(world.performers))
    seq = world.sequences[name]["simon_says"]
    data = simon_says_data(seq.controls, tracked_geometry(world, "OS1", name, "simon_says"), seq.hold,
                           simon_says_masks(world), "mean")
    beta = jnp.asarray(world.performers[name].beta, model.dtype)
    combos = jnp.asarray(cs.simon_says.combination_targets)
    calibrated, _ = calibrate_simon_says(model, rig, beta, data, combos, CalibrationConfig())
    problem = ft.finetune_problem(model, calibrated.rig, beta, primary=cs.primary_mask, exprdirs=calibrated.exprdirs)
    stages = ft.DEFAULT_STAGES
    if args.quick:
        stages = tuple(dataclasses.replace(st, maxiter=2) for st in stages)
    cfg = ft.FinetuneConfig(stages=stages)
    n, k = data.controls.shape
    print(f"\n== 3. fine-tuning: from the calibrated rig, V={model.n_vertices}, K={k}, N={n} Simon-Says samples "
          f"(tracker OS1, performer {name})")

    def timed_run():
        marks = [time.perf_counter()]
        theta, state = ft.FineTuning(cfg).run(None, problem, data,
                                              progress=lambda *_: marks.append(time.perf_counter()))
        return np.diff(marks), state

    first, _ = timed_run()      # compiles
    again, state = timed_run()  # compiled
    rows = [dict(stage=st.name, first_s=float(f), run_s=float(r), iterations=int(i), columns=int(c),
                 value_after=float(v))
            for st, f, r, i, c, v in zip(stages, first, again, state.stage_iters, state.columns,
                                         state.stage_values[1:])]
    print(table(["stage", "first call s (compile)", "run s", "L-BFGS its", "B columns", "L after"],
                [[r["stage"], f"{r['first_s']:.1f}", f"{r['run_s']:.1f}", r["iterations"], r["columns"],
                  f"{r['value_after']:.4f}"] for r in rows]))
    print(f"L {float(state.stage_values[0]):.4f} -> {float(state.value):.4f}; total {again.sum():.1f} s "
          f"(first call {first.sum():.1f} s)")

    # One gradient of L: ours vs the direct method on stage 1's parameters.
    ctx = ft._context_jit(problem, problem.reference, data, jnp.ones_like(problem.primary))
    z = ft._normalise(problem.reference, problem, cfg.length)
    primary = jnp.asarray(cs.primary_mask, model.dtype)
    vg = lambda: ft._value_and_grad(z, ctx, jnp.asarray(0.0, model.dtype), primary, cfg=cfg, regram=False)  # noqa: E731
    jax.block_until_ready(vg())
    ours_s, _ = repeat_timed(lambda: jax.block_until_ready(vg()), min_total_s=0.0, max_repeats=3)

    weights = cfg.weights
    cols = np.flatnonzero(cs.primary_mask)
    c_star = ft._solve_jit(ctx, problem.reference, cfg=cfg)
    y, c0 = data.vertices[0], c_star[0]

    @jax.jit
    def direct(b_cols):  # dc/d(B's primary columns), materialised, for one sample
        def grad_c(b):
            theta = problem.reference._replace(basis=problem.reference.basis.at[:, cols].set(b))
            return jax.grad(ft.objective, argnums=1)(ft.tracker_problem(problem, theta, regram=False), c0, y, weights)
        mixed = jax.jacfwd(grad_c)(b_cols)                                   # (K, P, C)
        hess = jax.hessian(lambda c: ft.objective(problem.inversion, c, y, weights))(c0)
        free = ((c0 > cfg.bound_tol) & (c0 < 1 - cfg.bound_tol)).astype(c0.dtype)
        system = hess * free[:, None] * free[None, :] + jnp.diag(1 - free + 1e-6 * free)
        return -jnp.linalg.solve(system, (free[:, None, None] * mixed).reshape(k, -1))
    b0 = problem.reference.basis[:, cols]
    t = time.perf_counter()
    jax.block_until_ready(direct(b0))
    direct_first = time.perf_counter() - t
    direct_one, _ = repeat_timed(lambda: jax.block_until_ready(direct(b0)), min_total_s=0.0, max_repeats=1)
    direct_s = direct_one * n
    n_v, n_e = model.n_vertices, model.n_expr
    full_entries = 3 * n_v * (n_e * n_v * 3 + rig.basis.size)
    result = dict(stages=rows, value_before=float(state.stage_values[0]), value_after=float(state.value),
                  total_s=float(again.sum()), first_call_total_s=float(first.sum()),
                  gradient=dict(ours_s=ours_s, direct_reduced_rig_s=direct_s, direct_per_sample_s=direct_one,
                                direct_first_call_s=direct_first, reduced_parameters=int(b0.size),
                                ratio=direct_s / ours_s, full_rig_dR_dtheta_entries=int(full_entries)))
    print(table(["gradient of L", "parameters", "seconds", "ratio"],
                [["ours (implicit adjoint)", f"{b0.size} (stage 1) .. {n_e * n_v * 3 + rig.basis.size} (full)",
                  f"{ours_s:.2f}", "1x"],
                 ["direct: materialised dc/dtheta", f"{b0.size} (stage 1 only)", f"{direct_s:.2f}",
                  f"{direct_s / ours_s:.1f}x"]]))
    print(f"direct method: {direct_one:.2f} s per sample x {n} samples (compile {direct_first - direct_one:.1f} s); "
          f"for the full rig dR/dtheta alone would hold {full_entries:.2e} entries per sample "
          f"({full_entries * 4 / 2**30:.1f} GiB in float32)")
    return result


# ---------------------------------------------------------------- main


def parse_sections(text: str) -> list[str]:
    sections = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise argparse.ArgumentTypeError(f"sections must be among {','.join(SECTIONS)}, got {text!r}")
    return sections


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke-test sizes: frames {QUICK['frames']}, baseline on {QUICK['baseline_frames']} "
                         f"frames, vmapped batches {QUICK['batches']}")
    ap.add_argument("--sections", type=parse_sections, default=list(SECTIONS),
                    help="comma-separated, among " + ",".join(SECTIONS) + " (default: all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"], help="the world's head size")
    ap.add_argument("--cache", default="/tmp/calib_cache", help="synthetic world cache ('' for none)")
    ap.add_argument("--frames", type=int, nargs="+", default=None, help="tracking batch sizes")
    ap.add_argument("--baseline-frames", type=int, default=None, help="the baseline's frames at most")
    ap.add_argument("--batches", type=int, nargs="*", default=None, help="vmapped calibration batch sizes")
    args = ap.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)

    jax.config.update("jax_enable_x64", False)
    info = machine()
    print(f"machine: {info['platform']}, {info['cpu']}, {info['cpu_count']} CPUs ({info['cpus_usable']} usable), "
          f"load average {' '.join(f'{x:.2f}' for x in info['load_average_start'])}")
    print(f"python {info['python']}, jax {info['jax']}, jaxlib {info['jaxlib']}, backend {info['backend']}, "
          f"devices {', '.join(info['devices'])}")
    print(f"sections {','.join(args.sections)}; {'--quick ' if args.quick else ''}sizes {sizes}; "
          f"world size {args.size}")

    t0 = time.perf_counter()
    setup = make_setup(args.size, need_world=bool({"calibrate", "finetune"} & set(args.sections)), cache=args.cache)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s")
    results: dict[str, Any] = dict(machine=info, quick=args.quick, sizes=sizes, world_size=args.size)
    if "track" in args.sections:
        results["track"] = bench_track(setup, sizes["frames"], sizes["baseline_frames"])
    if "calibrate" in args.sections:
        results["calibrate"] = bench_calibrate(setup, sizes["batches"])
    if "finetune" in args.sections:
        results["finetune"] = bench_finetune(setup, args)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["total_s"] = time.perf_counter() - t0
    print(f"\ntotal {results['total_s']:.1f} s; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in results['machine']['load_average_end'])} "
          "(above ~2 on this 2-core machine: other jobs shared the cores, so the times are noisy)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
