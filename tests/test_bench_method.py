"""scripts/bench_method.py: the method's benchmark runs (smoke sizes) and writes its numbers as JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_tracking_section_writes_rates_and_objectives(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "scripts/bench_method.py", "--quick", "--sections", "track", "--size", "tiny",
           "--frames", "1", "40", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "baseline" in proc.stdout and "ratio" in proc.stdout
    res = json.loads(out.read_text())
    assert {"machine", "track", "sizes", "total_s"} <= set(res) and "calibrate" not in res
    assert {"platform", "cpu_count", "jax", "devices"} <= set(res["machine"])
    track = res["track"]
    assert track["baseline"]["fps"] > 0 and track["baseline"]["frames"] >= 1
    assert [r["frames"] for r in track["runs"]] == [1, 40]
    for r in track["runs"]:
        assert {"fps", "compile_s", "baseline_fps", "ratio", "objective_ours", "objective_baseline",
                "objective_tol", "objective_ok", "target_met"} <= set(r)
        assert r["fps"] > 0 and r["baseline_fps"] > 0 and r["ratio"] > 0
        assert r["baseline_frames"] == min(r["frames"], track["baseline"]["frames"])
        # the same objective: ours (float32 solve) within tolerance of scipy's float64 optimum or lower
        assert r["objective_ours"] <= r["objective_baseline"] + r["objective_tol"]


def test_sections_are_parsed(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_method", ROOT / "scripts" / "bench_method.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_method", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(Exception):
        module.parse_sections("track,nonsense")
    assert module.parse_sections("track, calibrate") == ["track", "calibrate"]
