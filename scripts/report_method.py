"""The method's evaluation on the synthetic world: baseline vs calibrated vs fine-tuned, every metric.

    .venv/bin/python scripts/report_method.py                 # the default world (WorldConfig())
    .venv/bin/python scripts/report_method.py --quick         # a tiny world, few frames: seconds
    .venv/bin/python scripts/report_method.py --max-frames 500 --out outputs/report_method

Runs :func:`flamejax.evaluate.evaluate_world` (all performers, both trackers, ROM 1, ROM 2 and
Pangram held out, the Simon-Says take as training data), prints the Markdown tables and writes to
``--out``: ``report.md``, ``records.csv`` (one row per performer, tracker, take, variant),
``summary.csv`` (mean/std/min/max over performers) and ``settings.json`` (the world's config and
key, calibration and inversion settings, frame cap, run time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flamejax.calibrate import CalibrationConfig  # noqa: E402
from flamejax.evaluate import (evaluate_world, finetuned_variant, settings_dict, summarise, to_csv,  # noqa: E402
                               to_markdown)
from flamejax.finetune import FinetuneConfig  # noqa: E402
from flamejax.synthetic.sequences import SequenceConfig  # noqa: E402
from flamejax.synthetic.world import WorldConfig, load_or_make_world  # noqa: E402
from flamejax.track import InversionConfig, InversionWeights  # noqa: E402

# --quick: the tests' small world (tiny head, two performers, short takes, default Simon-Says holds).
QUICK_WORLD = WorldConfig(seed=1, size="tiny", n_performers=2,
                          sequences=SequenceConfig(ramp=0.2, rest=0.1, rom_singles=2, rom_pairs=1,
                                                   text="Pack my box."))
QUICK_FRAMES = 48


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny world, few frames per take (seconds)")
    ap.add_argument("--out", default="outputs/report_method", help="output folder")
    ap.add_argument("--world-cache", default=".flamejax_cache", help="world cache folder ('' = no cache)")
    ap.add_argument("--max-frames", type=int, default=None,
                    help="at most this many frames per evaluated take, evenly spaced (default: all)")
    ap.add_argument("--takes", nargs="+", default=["rom1", "rom2", "pangram"], help="held-out takes")
    ap.add_argument("--l1", type=float, default=InversionWeights().l1)
    ap.add_argument("--tweaker", type=float, default=InversionWeights().tweaker)
    ap.add_argument("--smoothness", type=float, default=InversionWeights().smoothness)
    ap.add_argument("--calibration-frames", default="mean", choices=["mean", "all"])
    ap.add_argument("--no-finetune", action="store_true",
                    help="leave out the fine-tuned variant (flamejax.finetune, the authors' four stages)")
    args = ap.parse_args(argv)

    cfg = QUICK_WORLD if args.quick else WorldConfig()
    max_frames = args.max_frames if args.max_frames is not None else (QUICK_FRAMES if args.quick else None)
    calibration = CalibrationConfig()
    weights = InversionWeights(l1=args.l1, tweaker=args.tweaker, smoothness=args.smoothness)
    inversion = InversionConfig()
    finetune = FinetuneConfig()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    world = load_or_make_world(cfg, args.world_cache or None)
    world_s = time.perf_counter() - start
    print(f"world {cfg.key()} ({cfg.size}, {world.generic.model.n_vertices} vertices, {len(world.performers)} "
          f"performers, trackers {list(world.tracked)}) in {world_s:.1f} s; {jax.devices()[0]}", flush=True)

    start = time.perf_counter()
    records = evaluate_world(world, calibration=calibration, weights=weights, inversion=inversion,
                             takes=tuple(args.takes), max_frames=max_frames,
                             calibration_frames=args.calibration_frames,
                             extra_variants=() if args.no_finetune else (finetuned_variant(finetune),),
                             progress=lambda msg: print("  " + msg, flush=True))
    eval_s = time.perf_counter() - start
    summary = summarise(records)
    tables = to_markdown(summary)
    frames = {t: sorted({r["frames"] for r in records if r["take"] == t}) for t in dict.fromkeys(r["take"] for r in records)}

    cap = f"at most {max_frames} frames per take (evenly spaced)" if max_frames else "all frames"
    header = (f"# Method evaluation on the synthetic world {cfg.key()}\n\n"
              f"{len(world.performers)} performers, trackers {', '.join(world.tracked)}; {cap}; "
              f"frames evaluated per take: {frames}. Cells: mean ± std over performers. "
              f"Inversion weights l1={weights.l1}, tweaker={weights.tweaker}, smoothness={weights.smoothness}; "
              f"calibration on the Simon-Says take (frames={args.calibration_frames}). "
              f"Evaluation {eval_s:.0f} s.\n\n")
    print()
    print(tables)
    (out / "report.md").write_text(header + tables)
    to_csv(records, out / "records.csv")
    to_csv(summary, out / "summary.csv")
    (out / "settings.json").write_text(json.dumps({
        "world_key": cfg.key(), "world": cfg.to_dict(), **settings_dict(calibration, weights, inversion),
        "takes": list(args.takes), "max_frames": max_frames, "calibration_frames": args.calibration_frames,
        "finetune": None if args.no_finetune else {
            "stages": [dataclasses.asdict(st) for st in finetune.stages],
            **{k: getattr(finetune, k) for k in ("w_controls", "w_geometry", "w_reg", "filter_threshold")}},
        "frames": frames, "world_seconds": world_s, "evaluation_seconds": eval_s,
        "device": str(jax.devices()[0]),
    }, indent=2, sort_keys=True))
    print(f"evaluation {eval_s:.0f} s; wrote report.md, records.csv, summary.csv, settings.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
