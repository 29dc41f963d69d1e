"""experiments.figures on the tests' tiny world: make_figures writes Fig. 1, Fig. 3 and the MP4 (decoded
back and compared with the panels rendered directly), the figure data behaves (the avatars differ, the
picked Simon-Says frame is the one calibration changes most), the video writer pads and checks its
frames, and the sweep plots leave failed jobs out."""

from __future__ import annotations

import inspect
import json
import warnings

import imageio.v2 as imageio
import numpy as np
import pytest

from experiments import figures as F
from flamejax import render as R
from flamejax.calibrate import CalibrationConfig
from flamejax.track import InversionConfig, InversionWeights

FRAMES = 8
CELL = 96


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world


SETTINGS = dict(calibration=CalibrationConfig(), weights=InversionWeights(), inversion=InversionConfig(),
                max_frames=FRAMES, hold_frames_per_expression=2)


_COMPUTED: dict = {}
_figure_data = F.figure_data


def memo_figure_data(world, **kwargs):
    """F.figure_data, computed once per distinct set of arguments in this module: make_figures
    and the tests of its data then share one calibration and tracking (the most expensive part
    after compiling)."""
    bound = inspect.signature(_figure_data).bind(world, **kwargs)
    bound.apply_defaults()                # the same call spelled with or without its defaults
    key = (id(world), tuple((k, repr(v)) for k, v in bound.arguments.items() if k not in ("world", "progress")))
    if key not in _COMPUTED:
        _COMPUTED[key] = _figure_data(world, **kwargs)
    return _COMPUTED[key]


@pytest.fixture(scope="module")
def data(world):
    return memo_figure_data(world, **SETTINGS)


@pytest.fixture(scope="module")
def made(world, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    messages = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "figure_data", memo_figure_data)
        paths = F.make_figures(world, out_dir=out, cell=CELL, progress=messages.append, video_progress=False,
                               **SETTINGS)
    assert len(_COMPUTED) == 1            # make_figures asked for exactly the data computed above
    return paths


def read_video(path):
    """(T, H, W, 3) uint8 decoded frames and the metadata of an MP4 (imageio's ffmpeg reader)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)   # JAX's, on ffmpeg's start
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            # iterate, never list(reader): its length is unknown (inf) to the ffmpeg reader
            return np.stack([frame for frame in reader]), reader.get_meta_data()
        finally:
            reader.close()


def test_make_figures_writes_decodable_non_blank_files(made, world, data):
    assert set(made) == {"fig1", "fig3", "video", "info"}
    assert [made[k].name for k in ("fig1", "fig3", "video")] == ["fig1_controls.png", "fig3_retarget.png",
                                                                  "retarget.mp4"]
    for key in ("fig1", "fig3"):
        image = imageio.imread(made[key])
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, (key, image.shape)
        assert image[..., :3].astype(float).std() > 20, key          # not blank
    # Fig. 3 shows the avatars in colour: bluish pixels, and the difference heat map's warm ones
    fig3 = imageio.imread(made["fig3"])[..., :3].astype(int)
    assert np.mean((fig3[..., 2] - fig3[..., 0]) > 25) > 0.02
    info = json.loads(made["info"].read_text())
    assert info["performer"] == data.performer and info["take"] == "pangram"
    expression, pos = F.pick_simon_says_frame(data)
    assert info["fig1"]["expression"] == data.expressions[expression]
    assert info["video"]["frames"] == FRAMES
    np.testing.assert_allclose(info["avatars"], data.avatars[:, :10], rtol=1e-6)   # the non-zero coefficients
    assert info["variants"]["calibrated"]["objective_after"] < info["variants"]["calibrated"]["objective_before"]


def test_video_has_every_frame_and_shows_the_panels(made, data):
    frames, meta = read_video(made["video"])
    n_cols = len(F.RetargetPanels.COLUMNS)
    height, width = 26 + 24 + len(data.avatars) * CELL, 28 + n_cols * CELL
    assert frames.shape == (FRAMES, height + height % 2, width + width % 2, 3)
    assert meta["fps"] == pytest.approx(30.0)
    # the decoded frames are the panels rendered directly, up to H.264's loss
    panels = F.RetargetPanels(data, cell=CELL)
    for t in (0, FRAMES - 1):
        cells = panels.cells(t)
        grid = np.concatenate([R.side_by_side(row) for row in cells], 0)
        decoded = frames[t, 50:50 + grid.shape[0], 28:28 + grid.shape[1]].astype(float)
        assert np.mean(np.abs(decoded - grid)) < 6.0
        # the performer's panel is mostly not background where its mesh is
        mask = R.rasterize(data.take_tracked[t], data.faces, panels.camera).mask
        assert 0.1 < mask.mean() < 0.9
        assert np.all(cells[0][0][mask].min(-1) < 250)
        assert np.all(cells[0][0][~mask] == 255)


def test_figure_data(data, world):
    k = len(world.control_set.names)
    n_expr = len(data.expressions)
    seq = world.sequences[data.performer]["simon_says"]
    assert np.all(seq.hold[data.hold_frames] >= 0) and np.array_equal(seq.hold[data.hold_frames], data.hold)
    assert sorted(set(data.hold.tolist())) == list(range(n_expr))
    assert np.all(np.bincount(data.hold) <= 2)                       # hold_frames_per_expression
    for name in F.VARIANTS:
        assert data.hold_solved[name].shape == (len(data.hold_frames), k)
        assert data.take_solved[name].shape == (FRAMES, k)
        assert data.hold_solved[name].min() >= 0 and data.hold_solved[name].max() <= 1 + 1e-6
    assert np.array_equal(np.diff(data.take_frames), np.ones(FRAMES - 1))   # consecutive
    # the solved controls recognise the prompted expressions: the intended one is active
    solved = data.hold_solved["baseline"]
    assert np.mean(np.sum(solved * data.hold_intended, 1) > 0.3) > 0.8
    # calibration changes the solution, and Fig. 1's frame is where it changes most
    diff = np.abs(data.hold_solved["calibrated"] - data.hold_solved["baseline"]).sum(1)
    expression, pos = F.pick_simon_says_frame(data)
    means = [diff[data.hold == e].mean() for e in range(n_expr)]
    assert expression == int(np.argmax(means)) and data.hold[pos] == expression and max(means) > 0.05


def test_avatars_differ_and_wear_the_same_performance(data):
    a = data.avatars
    assert a.shape[0] == 2 and np.all(a[:, 10:] == 0) and not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(a, F.random_avatars(a.shape[1], 2, seed=0))    # deterministic
    assert not np.allclose(a, F.random_avatars(a.shape[1], 2, seed=1))
    base = data.retargeted["baseline"]                                           # (A, T, V, 3)
    assert base.shape == (2, FRAMES, len(data.take_tracked[0]), 3)
    rms_mm = np.sqrt(np.mean(np.sum((base[0] - base[1]) ** 2, -1))) * 1e3
    assert rms_mm > 2.0                                                          # different faces
    # ... making the same expression change: displacement from each avatar's first frame agrees
    # far better between the avatars than the avatars' shapes do
    motion = base - base[:, :1]
    assert np.sqrt(np.mean(np.sum((motion[0] - motion[1]) ** 2, -1))) * 1e3 < 0.5 * rms_mm
    panels = F.RetargetPanels(data, cell=64)
    rows = panels.cells(0)
    assert not np.array_equal(rows[0][1], rows[1][1])                            # the pictures differ too
    # the difference column is coloured by the distance between the two retargets
    t = F.pick_take_frame(data)
    d = np.linalg.norm(data.retargeted["calibrated"] - data.retargeted["baseline"], axis=-1)
    assert np.argmax(d.mean((0, 2))) == t or np.isclose(
        np.sqrt((d ** 2).mean(-1)).mean(0)[t], np.sqrt((d ** 2).mean(-1)).mean(0).max())


def test_plot_controls_shows_only_active_controls(tmp_path, world):
    names = world.control_set.names
    k = len(names)
    rng = np.random.default_rng(0)
    few_u, few_c = np.zeros(k), np.zeros(k)
    few_u[[1, 5]], few_c[[1, 7]] = 0.8, [0.7, 0.3]
    many = rng.uniform(0.1, 1.0, k)
    p_few = F.plot_controls(names, few_u, few_c, tmp_path / "few.png", title="few")
    p_many = F.plot_controls(names, many, few_c, tmp_path / "many.png", intended=few_u,
                             tweakers=world.control_set.tweaker_mask, title="many")
    h_few, h_many = imageio.imread(p_few).shape[0], imageio.imread(p_many).shape[0]
    assert h_many > 3 * h_few                       # one labelled row per shown control
    with pytest.raises(ValueError, match="uncalibrated and calibrated"):
        F.plot_controls(names, few_u[:-1], few_c, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="intended"):
        F.plot_controls(names, few_u, few_c, tmp_path / "bad.png", intended=few_u[:3])


def test_write_video_pads_odd_sizes_and_checks_frames(tmp_path):
    frames = np.zeros((5, 33, 47, 3), np.uint8)
    frames[..., 0] = 200                             # red
    frames[:, 10:20, 10:30] = (0, 0, 220)            # a blue box
    path = F.write_video(frames, tmp_path / "odd.mp4", fps=12)
    decoded, meta = read_video(path)
    assert decoded.shape == (5, 34, 48, 3)
    assert meta["fps"] == pytest.approx(12.0)
    assert np.abs(decoded[:, 2:8, 2:8].astype(float) - (200, 0, 0)).mean() < 12
    assert np.abs(decoded[:, 12:18, 12:28].astype(float) - (0, 0, 220)).mean() < 12
    # a generator works (streamed), and bad frames are refused without leaving a file
    F.write_video((f for f in frames), tmp_path / "gen.mp4")
    assert read_video(tmp_path / "gen.mp4")[0].shape[0] == 5
    with pytest.raises(ValueError, match="first was"):
        F.write_video([frames[0], frames[0, :32]], tmp_path / "mixed.mp4")
    with pytest.raises(ValueError, match="uint8"):
        F.write_video(frames.astype(float), tmp_path / "float.mp4")
    with pytest.raises(ValueError, match="at least one"):
        F.write_video([], tmp_path / "empty.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.mp4", "odd.mp4"]


def sweep_rows():
    rows = []
    for reg in (1e-4, 1e-3, 1e-2):
        for l1 in (1e-3, 1e-2):
            rows.append({"job": f"reg={reg},l1={l1}", "status": "done", "calibration.reg": reg, "tracker.l1": l1,
                         "calibrated/sparsity": 0.05 + 0.01 * np.log10(reg) ** 2 - l1,
                         "calibrated/fit_tracked_mm": 0.1 + l1 * 5 + reg})
    failed = {"job": "reg=1,l1=1", "status": "failed", "calibration.reg": 1.0, "tracker.l1": 1.0,
              "calibrated/sparsity": None, "calibrated/fit_tracked_mm": float("nan")}
    # a failed job that still reported (absurd) numbers must not be drawn either
    failed_with_numbers = dict(failed, job="reg=10", **{"calibration.reg": 10.0, "calibrated/sparsity": 50.0,
                                                         "calibrated/fit_tracked_mm": 80.0})
    return rows, [failed, failed_with_numbers]


def test_plot_sweep_and_tradeoff_leave_failed_jobs_out(tmp_path):
    rows, failed = sweep_rows()
    params = ["calibration.reg", "tracker.l1"]
    metrics = ["calibrated/sparsity", "calibrated/fit_tracked_mm"]
    with_failed = F.plot_sweep(rows + failed, params, metrics, tmp_path / "sweep.png", title="t")
    without = F.plot_sweep(rows, params, metrics, tmp_path / "sweep_ok.png", title="t")
    a, b = imageio.imread(with_failed), imageio.imread(without)
    assert a.shape == b.shape and a.shape[1] > 700 and a.shape[0] > 500        # a 2 x 2 grid
    np.testing.assert_array_equal(a, b)
    assert a[..., :3].std() > 20
    # default title counts the failed jobs; a metric no job has still gives a plot
    F.plot_sweep(rows + failed, params, ["calibrated/missing"], tmp_path / "missing.png")
    assert imageio.imread(tmp_path / "missing.png").shape[0] > 200

    t1 = F.plot_tradeoff(rows + failed, metrics[1], metrics[0], tmp_path / "trade.png", label_params=params,
                         title="t")
    t2 = F.plot_tradeoff(rows, metrics[1], metrics[0], tmp_path / "trade_ok.png", label_params=params, title="t")
    t3 = F.plot_tradeoff(rows, metrics[1], metrics[0], tmp_path / "trade_nolabel.png", title="t")
    np.testing.assert_array_equal(imageio.imread(t1), imageio.imread(t2))
    assert not np.array_equal(imageio.imread(t2), imageio.imread(t3))            # the labels are drawn
    with pytest.raises(ValueError, match="parameter and one metric"):
        F.plot_sweep(rows, [], metrics, tmp_path / "x.png")


def test_helpers():
    assert F._use_log([1e-4, 1e-3, 1e-2]) and not F._use_log([1.0, 2.0, 5.0]) and not F._use_log([0.0, 1.0, 100.0])
    np.testing.assert_array_equal(F.take_window(10, None), np.arange(10))
    np.testing.assert_array_equal(F.take_window(10, 4), [3, 4, 5, 6])
    with pytest.raises(ValueError, match="max_frames"):
        F.take_window(10, 0)
