#!/usr/bin/env python3
"""Benchmark the vectorised sweep against a Hydra multirun of the same grid (issue 5).

    .venv/bin/python scripts/bench_sweep.py                  # 3 x 3 grid on the default world
    .venv/bin/python scripts/bench_sweep.py --quick          # the tests' tiny world (experiment=quick)

Both run as the user runs them, in a fresh process each, on the same already-made world:

- (a) multirun: ``python -m experiments.table1 -m finetune=none calibration.reg=... tracker.l1=...``:
  one Table 1 job per grid point, one after another in one process (Hydra's basic launcher), so
  every job loads the world, calibrates and tracks on its own (the programs compile once);
- (b) vectorised: ``python -m experiments.sweep grid=...``: per performer and tracker the grid's
  calibrations in one vmapped solve, per take every rig x weight setting in one program.

Each gets its own empty JAX compilation cache (both compile from nothing: a cold start, as a
user's first sweep). Printed: wall time of each, the ratio (a) / (b), and the largest difference
between the two joined tables (``sweep.csv``) per metric, which must stay within float32
tolerance (geometry 1% relative, control statistics 0.02 absolute).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGS = ("0.001", "0.01", "0.1")
L1S = ("0.0001", "0.001", "0.01")


def timed(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call([sys.executable, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{' '.join(args[:3])} failed (exit {code}); see {log}")
    return seconds


def ensure_world(overrides: list[str]):
    """Make (or read back) the world the table1 config with ``overrides`` uses."""
    from hydra import compose, initialize_config_dir

    from experiments.table1 import resolved
    from flamejax.synthetic.world import load_or_make_world

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg, _ = resolved(compose(config_name="table1", overrides=overrides))
    return load_or_make_world(cfg.data.world, cfg.data.cache_dir)


def rows(sweep_dir: Path) -> dict:
    with open(sweep_dir / "sweep.csv") as fh:
        return {(r["calibration.reg"], r["tracker.l1"]): r for r in csv.DictReader(fh)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="experiment=quick (the tests' tiny world)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sweep")
    parser.add_argument("--max-frames", type=int, default=None, help="evaluation.max_frames (default: the config's)")
    args = parser.parse_args()

    common = ["finetune=none", "figures.enabled=false"] + (["experiment=quick"] if args.quick else [])
    if args.max_frames:
        common.append(f"evaluation.max_frames={args.max_frames}")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; grid calibration.reg={','.join(REGS)} x tracker.l1={','.join(L1S)}; "
          f"{' '.join(common)}", flush=True)

    # the world first, so that neither side pays for making it
    start = time.perf_counter()
    ensure_world(common)
    print(f"world ready ({time.perf_counter() - start:.0f} s, made or read from the cache)", flush=True)
    with tempfile.TemporaryDirectory() as cache_a, tempfile.TemporaryDirectory() as cache_b:
        multi = timed(["-m", "experiments.table1", "-m", *common, f"hydra.sweep.dir={args.out / 'multirun'}",
                       f"compilation_cache={cache_a}", f"calibration.reg={','.join(REGS)}",
                       f"tracker.l1={','.join(L1S)}"], args.out / "multirun.log")
        print(f"(a) multirun, 9 jobs: {multi:.1f} s", flush=True)
        grid = f"grid={{calibration.reg: [{', '.join(REGS)}], tracker.l1: [{', '.join(L1S)}]}}"
        vec = timed(["-m", "experiments.sweep", *common, f"hydra.run.dir={args.out / 'vectorised'}",
                     f"compilation_cache={cache_b}", grid], args.out / "vectorised.log")
        print(f"(b) vectorised sweep: {vec:.1f} s", flush=True)

    a, b = rows(args.out / "multirun"), rows(args.out / "vectorised")
    assert set(a) == set(b) and len(a) == 9, (sorted(a), sorted(b))
    worst, ok = {}, True
    for point, row in a.items():
        for key in (k for k in row if "/" in k):
            x, y = float(row[key]), float(b[point][key])
            diff = abs(x - y) / max(abs(x), 1e-12) if key.endswith("_mm") else abs(x - y)
            worst[key] = max(worst.get(key, 0.0), diff)
            ok &= diff <= (1e-2 if key.endswith("_mm") else 0.02)
    print("largest difference, multirun vs vectorised (relative for *_mm, absolute otherwise):")
    for key, diff in worst.items():
        print(f"  {key:32s} {diff:.2e}")
    print(f"speed-up (a)/(b): {multi / vec:.2f}x; tables agree within float32 tolerance: {ok}")
    print(f"joined tables: {args.out / 'multirun' / 'sweep.md'} and {args.out / 'vectorised' / 'sweep.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
