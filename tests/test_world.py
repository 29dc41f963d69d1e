"""The synthetic world end to end, on a deliberately small config (tiny head, short takes), and
the make_dataset job that writes it. The small world is conftest's ``tiny_world``:
built once per test run and shared with test_evaluate.py."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import flamejax as fj
from experiments.make_dataset import world_config, write_dataset
from flamejax.synthetic.diagnostics import signature_report
from flamejax.synthetic.trackers import OS1, track
from flamejax.synthetic.world import TAKES, WorldConfig, load_world, performer_geometry, save_world

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.fixture(scope="module")
def small_world(tiny_world):
    """A deliberately small world (tiny head, two performers, both trackers, short takes but
    Simon-Says holds of the default length), built once per test run and cached on disk like a
    real one (conftest.tiny_world, shared with test_evaluate.py)."""
    assert tiny_world.config.n_performers == 2 and [n for n, _ in tiny_world.config.trackers] == ["OS1", "OS2"]
    return tiny_world


def test_world_contents(small_world):
    world = small_world
    name = "performer00"
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
        # the shared world may itself come from the cache: the stored precision is the made one's
        assert again.sequences[name][take].controls.dtype == np.float32
        assert np.asarray(again.tracked["OS2"][name][take].expression).dtype == world.generic.model.dtype
    np.testing.assert_array_equal(again.performers[name].residuals, world.performers[name].residuals)
    assert again.performers[name].residuals.dtype == np.float64
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
    sig = on_disk["performers"][name]["signature_vs_tracker_noise"]
    assert set(sig) == {"OS1", "OS2"} and sig["OS1"]["signature_mm_median"] > sig["OS1"]["noise_mm_median"] > 0
    assert set(on_disk["performers"][name]["tracker_residual_median_mm"]["OS2"]) == {
        "simon_says", "rom1", "rom2", "pangram"}
    assert len(on_disk["basis_fit_residual_mm"]) == 122


SIGNATURE_OVER_NOISE = 4.0        # median over expressions, hold-averaged (what calibration sees)
SIGNATURE_OVER_FRAME_NOISE = 1.3  # median over expressions, single frames
SIGNATURE_OVER_NOISE_EACH = 1.0   # every single expression, hold-averaged


@pytest.mark.parametrize("tracker", ["OS1", "OS2"])
def test_signature_is_real(small_world, tracker):
    """On the Simon-Says holds, the tracked geometry differs from the generic rig at the intended
    controls by clearly more than the tracker's noise, for every performer (the world's reason to
    exist; definitions in flamejax.synthetic.diagnostics)."""
    for name in small_world.performers:
        r = signature_report(small_world, name, tracker)
        assert len(r.expressions) == 19 and "Neutral" not in r.expressions
        sig, noise = np.median(r.signature_mm), np.median(r.noise_mm)
        assert sig > SIGNATURE_OVER_NOISE * noise, (name, sig, noise)
        assert sig > SIGNATURE_OVER_FRAME_NOISE * np.median(r.frame_noise_mm), (name, sig, r.frame_noise_mm)
        assert np.all(r.signature_mm > SIGNATURE_OVER_NOISE_EACH * r.noise_mm), (name, r.expressions)
        # the truth differs from the generic rig by a visible fraction of each expression's motion
        assert np.median(r.truth_mm / r.motion_mm) > 0.1


def test_signature_report_on_a_world_without_signature(small_world):
    """The same measurement on a performer without signature (gains 1, no cross-talk, no residual)
    finds only the tracker's own bias and noise: the check above can fail."""
    name = "performer00"
    plain = small_world.performers[name]._replace(
        gains=np.ones_like(small_world.performers[name].gains),
        crosstalk=np.zeros_like(small_world.performers[name].crosstalk),
        residuals=np.zeros_like(small_world.performers[name].residuals))
    world = small_world._replace(performers={**small_world.performers, name: plain})
    geometry = performer_geometry(world, name, "simon_says")
    seq = world.sequences[name]["simon_says"]
    tracked = track(world.generic.model, geometry, seq.global_pose, seq.neck_pose, OS1, jax.random.key(3),
                    shape=plain.beta)
    world = world._replace(tracked={**world.tracked, "OS1": {name: {"simon_says": tracked}}})
    r = signature_report(world, name, "OS1")
    assert np.median(r.truth_mm) < 0.05 * np.median(r.motion_mm)
    assert np.median(r.signature_mm) < SIGNATURE_OVER_NOISE * np.median(r.noise_mm)
