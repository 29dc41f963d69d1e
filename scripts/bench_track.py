#!/usr/bin/env python3
"""Benchmark rig-inversion tracking (flamejax.track) against a straightforward per-frame baseline
measured in the same run on the same inputs: scipy's L-BFGS-B on the same objective, float64,
with a jitted value-and-gradient, one frame at a time (how a PyTorch/scipy implementation runs).

    .venv/bin/python scripts/bench_track.py --size small --frames 1 100 1000 --baseline-frames 10

Inputs: the generic semantic rig of the synthetic model (size ``--size``), targets = the rig's
own meshes at Simon-Says-like controls plus 0.2 mm Gaussian noise. Printed per batch size: frames/s
of ours (after compilation; compile time separately), the baseline's frames/s and the ratio, and
the mean objective of both on the baseline's frames (ours must be equal or lower).
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from flamejax.semantic.controls import load_control_set
from flamejax.synthetic.semantic_model import make_generic_semantic_model
from flamejax.track import (InversionWeights, inversion_problem, objective, rig_geometry, track_controls)

TARGET_SPEEDUP = 50.0  # the floor for tracking frames/s against the baseline


def make_targets(cs, problem, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = cs.simon_says.targets[np.arange(n) % len(cs.simon_says.targets)] * rng.uniform(0.3, 1.0, (n, 1))
    geometry = jax.jit(jax.vmap(lambda x: rig_geometry(problem, x)))(jnp.asarray(c, jnp.float32))
    return np.asarray(geometry) + rng.normal(0, 2e-4, np.shape(geometry))


def baseline(problem64, targets, weights) -> tuple[float, np.ndarray]:
    """Seconds per frame and the objective values of scipy L-BFGS-B, float64, one frame at a time."""
    k = problem64.rig.n_controls
    f = jax.jit(jax.value_and_grad(lambda x, y: objective(problem64, x, y, weights)))
    f(jnp.zeros(k), jnp.asarray(targets[0])) # compile outside the timing
    values = []
    t0 = time.perf_counter()
    for y in targets:
        y = jnp.asarray(y, jnp.float64)
        res = minimize(lambda x: tuple(np.asarray(v, np.float64) for v in f(jnp.asarray(x), y)), np.zeros(k),
                       jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * k,
                       options=dict(maxiter=15000, maxfun=30000, ftol=1e-12, gtol=1e-8))
        values.append(res.fun)
    return (time.perf_counter() - t0) / len(targets), np.asarray(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--baseline-frames", type=int, default=10)
    args = ap.parse_args()
    cs = load_control_set("metahuman")
    gen = make_generic_semantic_model(0, args.size, cs.names)
    problem = inversion_problem(gen.model, gen.rig, tweakers=cs.tweaker_mask)
    weights = InversionWeights(l1=1e-3, tweaker=1e-2)
    print(f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
          f"{gen.model.n_vertices} vertices, K={cs.size}")
    targets = make_targets(cs, problem, max(max(args.frames), args.baseline_frames))

    jax.config.update("jax_enable_x64", True)
    rig64 = gen.rig.__class__(jnp.asarray(gen.rig.basis, jnp.float64), jnp.asarray(gen.rig.offset, jnp.float64),
                              gen.rig.n_expr, gen.rig.jaw_convention, gen.rig.has_neck, gen.rig.controls)
    problem64 = inversion_problem(gen.model.astype(jnp.float64), rig64, tweakers=cs.tweaker_mask)
    base_s, base_values = baseline(problem64, targets[:args.baseline_frames], weights)
    jax.config.update("jax_enable_x64", False)
    print(f"baseline scipy L-BFGS-B (float64, per frame): {1 / base_s:.1f} frames/s")

    for n in args.frames:
        y = jnp.asarray(targets[:n], jnp.float32)
        t0 = time.perf_counter()
        jax.block_until_ready(track_controls(problem, y, weights)[0])
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        controls, state = track_controls(problem, y, weights)
        jax.block_until_ready(controls)
        run_s = time.perf_counter() - t0
        fps = n / run_s
        print(f"ours, {n:6d} frames: {fps:9.1f} frames/s ({fps * base_s:6.1f}x baseline; target "
              f"{TARGET_SPEEDUP:.0f}x), first call {compile_s:.1f} s, GN iterations median "
              f"{int(np.median(state.iter_num))} max {int(np.max(state.iter_num))}")
    m = min(args.baseline_frames, max(args.frames))
    controls, _ = track_controls(problem, jnp.asarray(targets[:m], jnp.float32), weights)
    jax.config.update("jax_enable_x64", True)
    ours = [float(objective(problem64, jnp.asarray(controls[i], jnp.float64), jnp.asarray(targets[i]), weights))
            for i in range(m)]
    print(f"objective on the baseline's {m} frames (mm^2, float64): ours {np.mean(ours):.6f}, "
          f"baseline {np.mean(base_values[:m]):.6f}")


if __name__ == "__main__":
    main()
