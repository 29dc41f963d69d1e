"""scripts/dev.py, the set-up behind the README's two commands."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dev.py"


def load_dev():
    spec = importlib.util.spec_from_file_location("dev_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_command_is_a_valid_editable_install():
    dev = load_dev()
    assert dev.install_command([])[-2:] == ["-e", "."]
    assert dev.install_command(["test"])[-2:] == ["-e", ".[test]"]
    assert dev.install_command(["test", "compare"])[-2:] == ["-e", ".[test,compare]"]


def test_unknown_job_prints_usage_and_fails(capsys):
    dev = load_dev()
    assert dev.main(["frobnicate"]) == 2
    assert "scripts/dev.py run" in capsys.readouterr().out


def test_bench_picks_the_benchmark_script():
    dev = load_dev()
    assert dev.bench_command([]) == ["scripts/bench_flame.py"]
    assert dev.bench_command(["--batch", "64"]) == ["scripts/bench_flame.py", "--batch", "64"]
    assert dev.bench_command(["method", "--quick"]) == ["scripts/bench_method.py", "--quick"]
    assert dev.bench_command(["sweep", "--quick"]) == ["scripts/bench_sweep.py", "--quick"]
    assert dev.bench_command(["render"]) == ["scripts/bench_render.py"]
    for script in dev.BENCHMARKS.values():
        assert (SCRIPT.parent.parent / script).exists(), script
