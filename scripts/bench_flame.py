#!/usr/bin/env python3
"""Benchmark the FLAME forward pass: frames/s of flamejax (full and fixed-identity fast path)
and, in the same run on the same model file and inputs, of smplx.FLAME (PyTorch, no grad).

    python3 scripts/dev.py bench                   # or: .venv/bin/python scripts/bench_flame.py
    python scripts/bench_flame.py --batches 1 256 --json bench.json

The model is the embedded synthetic head at FLAME's size, written to a FLAME pkl (+ RingNet
landmark files) that both libraries load. Both compute the same outputs: vertices, joints and
the 68 landmarks with the yaw-dependent contour (``--mediapipe`` adds flamejax's 105 MediaPipe
points, which smplx does not compute). Times are the median over repeats of one compiled call
(flamejax) / one forward (smplx) after a warm-up; float32, CPU. smplx is used only when torch and
smplx are importable (``python3 scripts/dev.py test --compare`` installs them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import flamejax as fj

# The targets; printed against the measured ratios (never asserted: this is a benchmark).
TARGET_FULL_VS_SMPLX = {1: 5.0, 256: 5.0}
TARGET_FAST_VS_FULL = {256: 3.0}


def median_seconds(fn, min_repeats: int, min_seconds: float) -> float:
    """Median wall time of ``fn()`` over at least ``min_repeats`` calls and ``min_seconds``."""
    fn()  # warm-up (compiles for jax)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def random_inputs(batch: int, n_shape: int, n_expr: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        shape=rng.normal(size=(batch, n_shape)).astype(np.float32),
        expression=rng.normal(size=(batch, n_expr)).astype(np.float32),
        global_pose=(0.2 * rng.normal(size=(batch, 3))).astype(np.float32),
        neck_pose=(0.1 * rng.normal(size=(batch, 3))).astype(np.float32),
        jaw_pose=np.abs(0.2 * rng.normal(size=(batch, 3))).astype(np.float32),
        eye_pose=(0.1 * rng.normal(size=(batch, 6))).astype(np.float32),
        translation=(0.02 * rng.normal(size=(batch, 3))).astype(np.float32),
    )


def load_smplx(model_dir: Path, batch: int):
    """smplx.FLAME on the written model, or None when torch/smplx are not installed."""
    try:
        import smplx
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return smplx.FLAME(
        model_path=str(model_dir), num_betas=300, num_expression_coeffs=100, batch_size=batch,
        use_face_contour=True,
        static_landmark_embedding_path=str(model_dir / "flame_static_embedding.pkl"),
        dynamic_landmark_embedding_path=str(model_dir / "flame_dynamic_embedding.npy"),
    )


def smplx_call(flame, x: dict[str, np.ndarray]):
    import torch

    t = {k: torch.from_numpy(v) for k, v in x.items()}

    def call():
        with torch.no_grad():
            return flame(betas=t["shape"], expression=t["expression"], global_orient=t["global_pose"],
                         neck_pose=t["neck_pose"], jaw_pose=t["jaw_pose"], leye_pose=t["eye_pose"][:, :3],
                         reye_pose=t["eye_pose"][:, 3:], transl=t["translation"])

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    ap.add_argument("--min-repeats", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--no-smplx", action="store_true", help="skip smplx even when installed")
    ap.add_argument("--mediapipe", action="store_true",
                    help="flamejax also computes the 105 MediaPipe landmarks (smplx has none)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    model = fj.synthetic.make_flame(seed=0, size="full")
    if not args.mediapipe:
        model = dataclasses.replace(model, landmarks=dataclasses.replace(
            model.landmarks, mediapipe_faces=None, mediapipe_bary=None))
    print(f"model: synthetic head, {model.n_vertices} vertices, {int(model.faces.shape[0])} faces, "
          f"{model.n_shape} shape + {model.n_expr} expression components, float32; landmarks: "
          f"68{' + 105 MediaPipe' if args.mediapipe else ''}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(tmp.name)
    fj.io.save_flame(model, model_dir / "FLAME_NEUTRAL.pkl")
    fj.io.save_ringnet_embedding(model.landmarks, model_dir / "flame_static_embedding.pkl",
                                 model_dir / "flame_dynamic_embedding.npy")
    have_smplx = not args.no_smplx and load_smplx(model_dir, 1) is not None
    if not have_smplx:
        print("smplx: not measured (torch/smplx not installed or --no-smplx)")

    full = jax.jit(jax.vmap(fj.flame_forward, in_axes=(None, 0)))
    fast = jax.jit(jax.vmap(fj.flame_forward_fixed, in_axes=(None, 0)))

    # All flamejax timings first, then smplx: torch's worker threads keep spinning for a while
    # after each op and would steal a core from XLA if the two were interleaved.
    rows = []
    for batch in args.batches:
        x = random_inputs(batch, model.n_shape, model.n_expr, seed=batch)
        params = fj.FlameParams(**{k: jnp.asarray(v) for k, v in x.items()})
        fixed = fj.bind_identity(model, params.shape[0])
        fast_params = params._replace(shape=None)
        t_full = median_seconds(lambda: jax.block_until_ready(full(model, params)),
                                args.min_repeats, args.min_seconds)
        t_fast = median_seconds(lambda: jax.block_until_ready(fast(fixed, fast_params)),
                                args.min_repeats, args.min_seconds)
        rows.append(dict(batch=batch, full_fps=batch / t_full, fast_fps=batch / t_fast,
                         fast_vs_full=t_full / t_fast, _inputs=x, _vertices=np.asarray(full(model, params).vertices)))
    for row in rows:
        x, ours = row.pop("_inputs"), row.pop("_vertices")
        if have_smplx:
            call = smplx_call(load_smplx(model_dir, row["batch"]), x)
            t_smplx = median_seconds(call, max(3, args.min_repeats // 2), args.min_seconds)
            row["smplx_fps"] = row["batch"] / t_smplx
            row["full_vs_smplx"] = row["full_fps"] / row["smplx_fps"]
            row["max_vertex_diff_m_float32"] = float(np.abs(ours - call().vertices.numpy()).max())

    print(f"{'batch':>6} {'full fr/s':>11} {'fast fr/s':>11} {'smplx fr/s':>11} {'full/smplx':>11} {'fast/full':>10}")
    for row in rows:
        smplx_cols = (f"{row['smplx_fps']:>11.0f} {row['full_vs_smplx']:>10.1f}x" if have_smplx
                      else f"{'-':>11} {'-':>11}")
        print(f"{row['batch']:>6} {row['full_fps']:>11.0f} {row['fast_fps']:>11.0f} {smplx_cols} "
              f"{row['fast_vs_full']:>9.1f}x")

    print("\ntargets (issue 2):")
    by_batch = {r["batch"]: r for r in rows}
    for batch, target in TARGET_FULL_VS_SMPLX.items():
        r = by_batch.get(batch)
        if r and "full_vs_smplx" in r:
            print(f"  full vs smplx at batch {batch}: {r['full_vs_smplx']:.1f}x (target >= {target}x) "
                  f"{'met' if r['full_vs_smplx'] >= target else 'NOT met'}")
    for batch, target in TARGET_FAST_VS_FULL.items():
        r = by_batch.get(batch)
        if r:
            print(f"  fast path vs full at batch {batch}: {r['fast_vs_full']:.1f}x (target >= {target}x) "
                  f"{'met' if r['fast_vs_full'] >= target else 'NOT met'}")
    if have_smplx:
        worst = max(r["max_vertex_diff_m_float32"] for r in rows)
        print(f"  max |vertex difference| vs smplx in float32: {worst:.2e} m (float64 agreement is a test)")
    if args.json:
        args.json.write_text(json.dumps(dict(rows=rows, machine=platform.machine(), cores=os.cpu_count(),
                                             jax=jax.__version__, mediapipe=args.mediapipe), indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
