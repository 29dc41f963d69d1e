#!/usr/bin/env python3
"""Set up flamejax's virtual environment (from nothing but python3) and run a job in it.

    python3 scripts/dev.py run [hydra overrides...]   # the main job: Table 1 on the embedded synthetic world
    python3 scripts/dev.py test [pytest args...]      # the test suite
    python3 scripts/dev.py bench [args...]            # scripts/bench_flame.py (the forward pass)
    python3 scripts/dev.py bench method [args...]     # scripts/bench_method.py (tracking, calibration)
    python3 scripts/dev.py bench sweep [args...]      # scripts/bench_sweep.py (vectorised sweep vs multirun)
    python3 scripts/dev.py bench render [args...]     # scripts/bench_render.py (the rasteriser)
    python3 scripts/dev.py test --compare             # also install torch + smplx and run the cross-checks

The environment lives in ``.venv`` next to this repository. It is (re)installed only when
pyproject.toml or the requested extras change, so repeated commands start at once.
Only the standard library is used here, because this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def _run(cmd: list[str], **kwargs) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)


def install_command(extras: list[str]) -> list:
    """pip command installing this project (editable) with ``extras``."""
    target = f".[{','.join(extras)}]" if extras else "."
    return [PYTHON, "-m", "pip", "install", "--quiet", "-e", target]


def ensure_environment(extras: list[str]) -> None:
    """Create .venv and install the project with ``extras`` unless that is already done."""
    if sys.version_info < (3, 11):
        sys.exit(f"flamejax needs Python >= 3.11; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + ",".join(extras).encode()).hexdigest()[:16]
    stamp = VENV / f".flamejax-installed-{digest}"
    if stamp.exists():
        return
    for old in VENV.glob(".flamejax-installed-*"):
        old.unlink()
    steps = [[PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], install_command(extras)]
    for cmd in steps:
        if _run(cmd) != 0:
            sys.exit(f"installing the environment failed: {' '.join(map(str, cmd))}")
    stamp.write_text("ok\n")


BENCHMARKS = {"flame": "scripts/bench_flame.py", "method": "scripts/bench_method.py",
              "sweep": "scripts/bench_sweep.py", "render": "scripts/bench_render.py"}


def bench_command(args: list[str]) -> list[str]:
    """``bench [flame|method] [args...]`` -> the benchmark script and its arguments (default: flame)."""
    if args and args[0] in BENCHMARKS:
        return [BENCHMARKS[args[0]], *args[1:]]
    return [BENCHMARKS["flame"], *args]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "bench"}:
        print(__doc__)
        return 2
    job, args = argv[0], argv[1:]
    extras = ["test"] if job == "test" else []
    if "--compare" in args:
        args.remove("--compare")
        extras.append("compare")
    ensure_environment(extras)
    env = dict(os.environ, PYTHONHASHSEED="0")
    if job == "run":
        return _run([PYTHON, "-m", "experiments.table1", *args], env=env)
    if job == "bench":
        return _run([PYTHON, *bench_command(args)], env=env)
    # loadfile: a file's tests share one worker, so its expensive fixtures are built once.
    code = _run([PYTHON, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-q", *args], env=env)
    if code == 5:  # pytest: no tests were collected; that must never pass silently
        print("error: pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
