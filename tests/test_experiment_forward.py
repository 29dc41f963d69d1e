"""The main job composes from conf/, runs on the embedded model and writes what it says."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.configs import ConfigError, ForwardConfig
from experiments.forward import run

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_forward(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="forward", overrides=overrides)
    return ForwardConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))


def test_compose_defaults_to_full_size_synthetic_model():
    cfg = compose_forward([])
    assert cfg.model.kind == "synthetic" and cfg.model.size == "full"
    assert cfg.model.n_shape == 300 and cfg.model.n_expr == 100


def test_file_model_requires_a_path():
    cfg = compose_forward(["model=file", "model.path=/nonexistent/generic_model.pkl"])
    assert cfg.model.kind == "file"
    try:
        cfg.model.build()
    except Exception as e:  # the loader's clear error names the file
        assert "generic_model.pkl" in str(e)
    else:
        raise AssertionError("loading a missing file must fail")


@pytest.mark.parametrize("preset", ["flame2020", "flame2023"])
def test_flame_presets_are_files_with_the_release_sizes(preset):
    cfg = compose_forward([f"model={preset}", "model.path=/data/model.pkl"])
    assert (cfg.model.kind, cfg.model.path, cfg.model.n_shape, cfg.model.n_expr) == ("file", "/data/model.pkl", 300, 100)
    with pytest.raises(ConfigError, match="model.path is required"):   # the path is mandatory (???)
        compose_forward([f"model={preset}"])


def test_file_model_from_real_format_files(tmp_path):
    """model=file reads a FLAME pkl plus DECA landmarks and masks, the way a user's files come."""
    import flamejax as fj

    model = fj.synthetic.make_flame(seed=2, size="tiny")
    fj.io.save_flame(model, tmp_path / "generic_model.pkl")
    fj.io.save_deca_embedding(model.landmarks, tmp_path / "landmark_embedding.npy")
    fj.io.save_masks(model.masks, tmp_path / "FLAME_masks.pkl")
    cfg = compose_forward(["model=file", f"model.path={tmp_path / 'generic_model.pkl'}",
                           f"model.landmarks={tmp_path / 'landmark_embedding.npy'}",
                           f"model.masks={tmp_path / 'FLAME_masks.pkl'}", "model.n_expr=50",
                           "batch_size=3", "n_meshes=1", "benchmark_repeats=1"])
    loaded = cfg.model.build()
    assert loaded.n_expr == 50 and loaded.n_vertices == model.n_vertices
    assert set(loaded.masks) == set(model.masks)
    summary = run(cfg, tmp_path / "run")
    assert summary["model"]["n_expr"] == 50


def test_run_writes_meshes_landmarks_and_summary(tmp_path):
    cfg = compose_forward(["model.size=tiny", "batch_size=5", "n_meshes=2", "benchmark_repeats=1"])
    summary = run(cfg, tmp_path)
    meshes = sorted((tmp_path / "meshes").glob("*.obj"))
    assert len(meshes) == 2
    mesh = trimesh.load(meshes[0], process=False)
    assert mesh.vertices.shape == (summary["model"]["vertices"], 3)
    landmarks = np.load(tmp_path / "landmarks.npy")
    assert landmarks.shape == (5, 68, 3) and np.isfinite(landmarks).all()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["batch_size"] == 5 and on_disk["frames_per_second"] > 0


def test_command_line_entry_point(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.forward", "model.size=tiny", "batch_size=2", "n_meshes=1",
         "benchmark_repeats=1", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, cwd=CONF.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"to {tmp_path}" in out.stdout
    assert (tmp_path / "summary.json").exists() and (tmp_path / "meshes" / "frame_000.obj").exists()
