"""Benchmark Simon-Says calibration on the synthetic world: one performer, then vmapped batches.

    .venv/bin/python scripts/bench_calibrate.py [--size small] [--batches 8 16 64] [--cache DIR]
                                                [--linesearch zoom|backtracking]

Prints compile and run time of one calibration (tracker OS1's Simon-Says geometry, the world's
masks and combinations, default CalibrationConfig but for the line search), the Simon-Says residual before/after, the
rig's geometry error against the performer's TRUE canonical geometry (Simon-Says expressions and
the whole ROM 1 take, intended controls) before/after, and the time of vmapped batches of
copies of the performer's data (each copy with its own 0.1 mm noise) as a ratio to one.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.calibrate import CalibrationConfig, calibrate_many, calibrate_simon_says, simon_says_data
from flamejax.semantic.rig import rig_vertices_frames
from flamejax.synthetic.performers import performer_vertices
from flamejax.synthetic.world import WorldConfig, load_or_make_world, simon_says_masks, tracked_geometry


def timed(fn, repeats=3):
    """(first call seconds, median of ``repeats`` further calls, result)."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, float(np.median(times)), out


def rms_mm(a, b):
    """Per frame RMS distance over vertices, mean over frames, in mm."""
    return 1e3 * float(np.mean(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, -1), -1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small")
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 16, 64])
    ap.add_argument("--cache", default="/tmp/calib_cache")
    ap.add_argument("--linesearch", default=CalibrationConfig.linesearch, choices=["zoom", "backtracking"])
    args = ap.parse_args()

    world = load_or_make_world(WorldConfig(n_performers=1, size=args.size), cache_dir=args.cache)
    model, rig, target = world.generic.model, world.generic.rig, world.generic.target
    name = next(iter(world.performers))
    performer, seq = world.performers[name], world.sequences[name]["simon_says"]
    data = simon_says_data(seq.controls, tracked_geometry(world, "OS1", name, "simon_says"), seq.hold,
                           simon_says_masks(world), "mean")
    combos = jnp.asarray(world.control_set.simon_says.combination_targets)
    beta = jnp.asarray(performer.beta, model.dtype)
    cfg = CalibrationConfig(linesearch=args.linesearch)
    print(f"world size={args.size}: V={model.n_vertices}, E={model.n_expr}, K={rig.n_controls}, "
          f"N={len(data.expression)} expressions, C={len(combos)} combinations; {jax.devices()[0]}")

    t = time.perf_counter()
    compiled = calibrate_simon_says.lower(model, rig, beta, data, combos, cfg).compile()
    compile_s = time.perf_counter() - t
    _, run_s, (out, state) = timed(lambda: compiled(model, rig, beta, data, combos, cfg))
    print(f"one performer: compile {compile_s:.2f} s, run {run_s:.3f} s (median of 3); "
          f"{int(state.iter_num)} iterations, f {float(state.history[0]):.4f} -> {float(state.value):.4f} mm^2, "
          f"stalled={bool(state.stalled)}")
    before, after = 1e3 * np.asarray(state.residual_before), 1e3 * np.asarray(state.residual_after)
    print(f"Simon-Says residual (masked RMS, mm): mean {before.mean():.3f} -> {after.mean():.3f}, "
          f"max {before.max():.3f} -> {after.max():.3f}")
    print("  per expression before:", np.round(before, 3).tolist())
    print("  per expression after: ", np.round(after, 3).tolist())
    print("combination drift (mm):", np.round(1e3 * np.asarray(state.combination_drift), 3).tolist())

    # Truth: the performer's canonical geometry (zero head pose) at the intended controls.
    def truth(controls):
        zeros = np.zeros((len(controls), 3))
        return performer_vertices(model, target, performer, controls, zeros, zeros)

    for take, controls in (("simon_says (expressions)", np.asarray(data.controls)),
                           ("rom1 (all frames)", world.sequences[name]["rom1"].controls)):
        c = jnp.asarray(controls, model.dtype)
        true = truth(controls)
        generic = rig_vertices_frames(model, rig, c, shape=beta)
        calibrated = rig_vertices_frames(model, out.rig, c, shape=beta, exprdirs=out.exprdirs)
        print(f"geometry error vs truth, {take}, all vertices RMS: generic {rms_mm(generic, true):.3f} mm -> "
              f"calibrated {rms_mm(calibrated, true):.3f} mm")

    rng = np.random.default_rng(0)
    for m in args.batches:
        batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), data)
        batch = batch._replace(vertices=batch.vertices + jnp.asarray(
            rng.normal(0, 1e-4, batch.vertices.shape), model.dtype))  # each copy its own data
        betas = jnp.broadcast_to(beta, (m,) + beta.shape)
        first, run_m, (_, st) = timed(lambda: calibrate_many(model, rig, betas, batch, combos, cfg), repeats=1)
        print(f"vmap {m:3d} performers: compile+run {first:.2f} s, run {run_m:.2f} s = {run_m / run_s:.2f}x one "
              f"({run_m / m:.3f} s per performer); iterations {int(st.iter_num.min())}-{int(st.iter_num.max())}")


if __name__ == "__main__":
    main()
