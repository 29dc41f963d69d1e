"""The synthetic world end to end, on a deliberately small config (tiny head, short takes), and
the make_dataset job that writes it. One file, so that the session's small world is built once
(pytest runs with --dist loadfile)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import flamejax as fj
from experiments.make_dataset import world_config, write_dataset
from flamejax.synthetic.sequences import SequenceConfig
from flamejax.synthetic.trackers import OS2
from flamejax.synthetic.world import TAKES, WorldConfig, load_or_make_world, load_world, performer_geometry, save_world

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """A deliberately small world (tiny head, one performer, short takes, OS2 only), built once
    and cached on disk like a real one."""
    cfg = WorldConfig(seed=1, size="tiny", n_performers=1, trackers=(("OS2", OS2),),
                      sequences=SequenceConfig(ramp=0.1, hold=0.2, rest=0.1, rom_singles=2, rom_pairs=1,
                                               text="Pack my box."))
    return load_or_make_world(cfg, tmp_path_factory.mktemp("world_cache"))


def test_world_contents(small_world):
    world = small_world
    (name, performer), = world.performers.items()
    assert set(world.sequences[name]) == set(TAKES)
    for take in TAKES:
        seq = world.sequences[name][take]
        tracked = world.tracked["OS2"][name][take]
        t = len(seq.controls)
        assert seq.controls.shape == (t, 122) and tracked.expression.shape == (t, 100)
        assert np.all(np.asarray(tracked.expression)[:, 50:] == 0)  # OS2 estimates 50 coefficients
        assert np.all(np.asarray(tracked.jaw_pose)[:, 0] >= 0)      # and clamps the jaw opening
        # the tracker explains the performer's geometry to within a millimetre RMS per frame
        assert float(np.median(tracked.residual)) < 1e-3
    geometry = performer_geometry(world, name, "simon_says")
    assert geometry.shape == (len(world.sequences[name]["simon_says"].controls),
                              world.generic.model.n_vertices, 3)


def test_cache_round_trip_and_config_key(small_world, tmp_path):
    world = small_world
    folder = save_world(world, tmp_path / "w")
    again = load_world(folder)
    assert again.config == world.config
    name = next(iter(world.performers))
    for take in TAKES:
        np.testing.assert_array_equal(again.sequences[name][take].controls, world.sequences[name][take].controls)
        np.testing.assert_array_equal(np.asarray(again.tracked["OS2"][name][take].expression),
                                      np.asarray(world.tracked["OS2"][name][take].expression))
    np.testing.assert_array_equal(again.performers[name].residuals, world.performers[name].residuals)
    assert WorldConfig.from_dict(world.config.to_dict()) == world.config
    assert dataclasses.replace(world.config, seed=2).key() != world.config.key()


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
