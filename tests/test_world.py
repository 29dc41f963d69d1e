"""The synthetic world end to end, on a deliberately small config (tiny head, short takes)."""

import dataclasses

import numpy as np

from flamejax.synthetic.world import TAKES, WorldConfig, load_world, performer_geometry, save_world

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
