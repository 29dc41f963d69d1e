"""make_dataset: config composes into a typed world config; the written dataset reads back."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import flamejax as fj
from experiments.make_dataset import world_config, write_dataset

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_config_composes_into_world_config():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="make_dataset", overrides=["data.n_performers=2", "data.seed=5"])
    world_cfg, cache_dir = world_config(OmegaConf.to_container(cfg.data, resolve=True))
    assert world_cfg.n_performers == 2 and world_cfg.seed == 5 and cache_dir
    assert [name for name, _ in world_cfg.trackers] == ["OS1", "OS2"]
    assert dict(world_cfg.trackers)["OS2"].n_expr == 50 and dict(world_cfg.trackers)["OS2"].clamp_jaw_open


def test_written_dataset_reads_back(small_world, tmp_path):
    summary = write_dataset(small_world, tmp_path)
    model = fj.load_flame(tmp_path / "generic_flame.pkl", landmarks=tmp_path / "landmark_embedding.npy")
    assert model.n_vertices == small_world.generic.model.n_vertices
    name = next(iter(small_world.performers))
    data = fj.io.read_face_calibration(tmp_path / "face_calibration", identity=name,
                                       n_vertices=model.n_vertices)
    np.testing.assert_array_equal(data.basis, np.asarray(small_world.generic.rig.basis, np.float32))
    assert len(data.masks) == 20 and all(len(m) > 0 for m in data.masks)
    assert len(data.masks[16]) > len(data.masks[1])  # jaw open moves more of the face than brows down
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk["performers"][name]["tracker_residual_median_mm"]["OS2"]) == {
        "simon_says", "rom1", "rom2", "pangram"}
    assert len(on_disk["basis_fit_residual_mm"]) == 122
