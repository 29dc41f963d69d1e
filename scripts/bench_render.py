#!/usr/bin/env python3
"""Benchmark the NumPy rasteriser (flamejax.render): ms per frame of a ~10k-triangle head, and a
straightforward per-triangle Python-loop z-buffer rasteriser timed in the same run on the same mesh.

    .venv/bin/python scripts/bench_render.py                       # 512 x 512, plus 256 and 1024
    .venv/bin/python scripts/bench_render.py --sizes 512 --json bench.json

The mesh is the embedded synthetic head at FLAME's size (``make_flame(seed=0, size="full")``:
5,066 vertices, 10,020 triangles) at a random expression and open jaw, framed by ``fit_camera``.
Ours: :func:`flamejax.render.render` (rasterise + Lambert shading with interpolated vertex
normals, two-sided, no culling) -> uint8. The baseline does the same work the classic way: a
Python loop over triangles, each one's bounding box tested with NumPy (barycentrics, depth)
against the z-buffer and written where nearer, then the same shading per covered pixel. Both
images are compared (fraction of pixels whose winning triangle differs; ties and edge pixels
may differ). Times are the median over repeats after a warm-up; the baseline runs on the first
``--baseline-triangles`` triangles (default all) and, if fewer, is extrapolated per triangle
(said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import flamejax as fj
from flamejax import render as R

TARGET_MS = 1000.0  # the "well under a second" for a 10k-triangle head at 512 x 512


def median_seconds(fn, min_repeats: int, min_seconds: float) -> float:
    """Median wall time of ``fn()`` over at least ``min_repeats`` calls and ``min_seconds``."""
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def loop_rasterize(vertices: np.ndarray, faces: np.ndarray, camera: R.Camera) -> R.Raster:
    """The baseline: one triangle at a time, z-tested against the buffer over its bounding box."""
    h, w = camera.size
    p = camera.project(vertices)
    face_buf = np.full((h, w), -1, np.int32)
    zbuf = np.full((h, w), -np.inf)
    bary = np.zeros((h, w, 3))
    for t, (i, j, k) in enumerate(faces):
        (xa, ya, za), (xb, yb, zb), (xc, yc, zc) = p[i], p[j], p[k]
        area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if area == 0:
            continue
        c0 = max(int(np.ceil(min(xa, xb, xc) - 0.5)), 0)
        c1 = min(int(np.floor(max(xa, xb, xc) - 0.5)), w - 1)
        r0 = max(int(np.ceil(min(ya, yb, yc) - 0.5)), 0)
        r1 = min(int(np.floor(max(ya, yb, yc) - 0.5)), h - 1)
        if c1 < c0 or r1 < r0:
            continue
        X, Y = np.meshgrid(np.arange(c0, c1 + 1) + 0.5, np.arange(r0, r1 + 1) + 0.5)
        l0 = ((xb - X) * (yc - Y) - (xc - X) * (yb - Y)) / area
        l1 = ((xc - X) * (ya - Y) - (xa - X) * (yc - Y)) / area
        l2 = 1.0 - l0 - l1
        z = l0 * za + l1 * zb + l2 * zc
        region = zbuf[r0:r1 + 1, c0:c1 + 1]
        win = (l0 >= -1e-7) & (l1 >= -1e-7) & (l2 >= -1e-7) & (z > region)
        region[win] = z[win]
        face_buf[r0:r1 + 1, c0:c1 + 1][win] = t
        bary[r0:r1 + 1, c0:c1 + 1][win] = np.stack([l0[win], l1[win], l2[win]], -1)
    return R.Raster(face_buf, zbuf, bary)


def loop_render(vertices, faces, camera) -> tuple[np.ndarray, R.Raster]:
    raster = loop_rasterize(vertices, faces, camera)
    image = R.shade(raster, vertices, faces, camera)        # the same shading: only rasterising differs
    return np.round(image * 255).astype(np.uint8), raster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="square image sizes")
    ap.add_argument("--baseline-size", type=int, default=512)
    ap.add_argument("--baseline-triangles", type=int, default=None,
                    help="time the baseline on this many triangles and extrapolate (default: all)")
    ap.add_argument("--min-repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    model = fj.synthetic.make_flame(seed=0, size="full")
    rng = np.random.default_rng(0)
    params = fj.FlameParams(expression=jnp.asarray(rng.normal(size=20), jnp.float32),
                            jaw_pose=jnp.array([0.15, 0.0, 0.0]))
    vertices = np.asarray(fj.flame_forward(model, params).vertices, np.float64)
    faces = np.asarray(model.faces)
    print(f"mesh: synthetic head, {len(vertices)} vertices, {len(faces)} triangles (random expression, jaw open)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at the start")

    rows = []
    for size in args.sizes:
        camera = R.fit_camera(vertices, size)
        t = median_seconds(lambda: R.render(vertices, faces, camera), args.min_repeats, args.min_seconds)
        covered = int(R.rasterize(vertices, faces, camera).mask.sum())
        rows.append(dict(size=size, ms=t * 1e3, covered_pixels=covered))

    camera = R.fit_camera(vertices, args.baseline_size)
    n = len(faces) if args.baseline_triangles is None else min(args.baseline_triangles, len(faces))
    sub = faces[:n]
    t_loop = median_seconds(lambda: loop_render(vertices, sub, camera), 1, 0.0)
    extrapolated = n < len(faces)
    if extrapolated:
        t_loop *= len(faces) / n
    ours_raster = R.rasterize(vertices, faces, camera)
    _, loop_raster = loop_render(vertices, faces, camera) if not extrapolated else (None, None)

    print(f"\n{'size':>6} {'ours (ms/frame)':>16} {'frames/s':>9} {'covered px':>11}")
    for r in rows:
        print(f"{r['size']:>6} {r['ms']:>16.1f} {1e3 / r['ms']:>9.1f} {r['covered_pixels']:>11}")
    ours = next((r for r in rows if r["size"] == args.baseline_size), None)
    if ours is None:
        ours = dict(size=args.baseline_size,
                    ms=median_seconds(lambda: R.render(vertices, faces, camera), args.min_repeats,
                                      args.min_seconds) * 1e3)
    ratio = t_loop * 1e3 / ours["ms"]
    how = (f"timed on the first {n} triangles and extrapolated per triangle to {len(faces)}" if extrapolated
           else f"all {len(faces)} triangles")
    print(f"\nbaseline (per-triangle Python loop, {how}) at {args.baseline_size}x{args.baseline_size}: "
          f"{t_loop * 1e3:.1f} ms/frame; ours {ours['ms']:.1f} ms/frame: {ratio:.1f}x")
    result = dict(rows=rows, baseline_ms=t_loop * 1e3, baseline_triangles=n, extrapolated=extrapolated,
                  ratio=ratio, machine=platform.machine(), cores=os.cpu_count(), numpy=np.__version__,
                  jax=jax.__version__)
    if loop_raster is not None:
        differ = float(np.mean(ours_raster.face != loop_raster.face))
        cover = float(np.mean(ours_raster.mask != loop_raster.mask))
        print(f"agreement with the baseline: winning triangle differs on {differ:.4%} of pixels, "
              f"coverage on {cover:.4%}")
        result.update(winner_differs=differ, coverage_differs=cover)
    print(f"target: a 10k-triangle head at 512x512 in well under {TARGET_MS:.0f} ms: "
          f"{'met' if ours['ms'] < TARGET_MS else 'NOT met'} ({ours['ms']:.1f} ms)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
