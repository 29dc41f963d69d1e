"""The paper's figures on the synthetic world: Fig. 1 (controls of one Simon-Says frame, uncalibrated
vs calibrated), Fig. 3 (a performance retargeted onto random avatars), the retargeting video, and
sweep plots.

    paths = make_figures(world, calibration=CalibrationConfig(), weights=InversionWeights(),
                         inversion=InversionConfig(), out_dir="outputs/figures")
    # {"fig1": .../fig1_controls.png, "fig3": .../fig3_retarget.png, "video": .../retarget.mp4,
    #  "info": .../figures.json}
    plot_sweep(rows, ["calibration.reg", "tracker.l1"], ["calibrated/sparsity"], "sweep.png")
    plot_tradeoff(rows, "calibrated/fit_tracked_mm", "calibrated/sparsity", "tradeoff.png")

    python -m experiments.figures experiment=quick --out outputs/figures --max-frames 60
    python -m experiments.figures tracker.l1=1e-2 --performer performer01 --tracker OS2

The computation is the library's (:func:`figure_data`): for one performer and tracker, the
baseline and calibrated variants exactly as :func:`flamejax.evaluate.evaluate_world` builds them
(:func:`flamejax.evaluate.baseline_variant`, :func:`flamejax.evaluate.calibrated_variant` on
:func:`flamejax.evaluate.calibration_samples`), the Simon-Says hold frames and the chosen take
tracked with each variant's rig (:func:`flamejax.track.track_controls`, one call per variant for
both), and the take's solved controls retargeted (:func:`flamejax.retarget.retarget`, the generic
rig) onto random avatars (random FLAME identities). Meshes are drawn by :mod:`flamejax.render`;
matplotlib (Agg) lays out the PNGs and draws the text, imageio + imageio-ffmpeg write the MP4.

The command line composes conf/table1.yaml (Hydra overrides as positional arguments: the world,
``calibration.*``, ``tracker.*``) and writes into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window (and no display on the machines this runs on)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flamejax import render as R  # noqa: E402
from flamejax.calibrate import CalibrationConfig  # noqa: E402
from flamejax.evaluate import (TRAINING_TAKE, VariantContext, baseline_variant, calibrated_variant,  # noqa: E402
                               calibration_samples, frame_subset)
from flamejax.retarget import retarget  # noqa: E402
from flamejax.synthetic.world import World, tracked_geometry  # noqa: E402
from flamejax.track import InversionConfig, InversionWeights, inversion_problem, track_controls  # noqa: E402

VARIANTS = ("baseline", "calibrated")
VARIANT_TITLES = {"baseline": "uncalibrated", "calibrated": "calibrated"}
PERFORMER_COLOR = (0.80, 0.72, 0.64)
AVATAR_COLOR = (0.62, 0.70, 0.82)
CONTROL_COLORS = {"baseline": "#8c8c8c", "calibrated": "#d6604d"}
FIGURE_FILES = {"fig1": "fig1_controls.png", "fig3": "fig3_retarget.png", "video": "retarget.mp4",
                "info": "figures.json"}


# ---------------------------------------------------------------- the computation


class FigureData(NamedTuple):
    """What the figures show, for one performer and tracker (:func:`figure_data`).

    names (K,) control names; tweakers (K,) bool; expressions (E,) Simon-Says expression names;
    hold_frames (H,) the Simon-Says take's labelled hold frames, hold (H,) their expression index,
    hold_intended (H, K) the intended controls there, hold_solved {variant: (H, K)} the solved ones;
    take_frames (T,) frame indices of the take shown (consecutive); take_tracked (T, V, 3) metres
    the take as the tracker saw it (canonical pose); take_solved {variant: (T, K)};
    avatars (A, S) the avatars' FLAME identities; retargeted {variant: (A, T, V, 3)} metres;
    faces (F, 3); info: the variants' build info (calibration objective etc.)."""

    performer: str
    tracker: str
    take: str
    names: tuple
    tweakers: np.ndarray
    expressions: tuple
    hold_frames: np.ndarray
    hold: np.ndarray
    hold_intended: np.ndarray
    hold_solved: dict
    take_frames: np.ndarray
    take_tracked: np.ndarray
    take_solved: dict
    avatars: np.ndarray
    retargeted: dict
    faces: np.ndarray
    info: dict


def random_avatars(n_shape: int, n_avatars: int = 2, *, seed: int = 0, n_coefficients: int = 10,
                   scale: float = 1.0) -> np.ndarray:
    """(n_avatars, n_shape) random FLAME identities: the first ``n_coefficients`` shape
    coefficients ~ N(0, scale^2) (FLAME's shape space is in units of its standard deviations),
    the rest zero. Deterministic in ``seed`` (jax.random)."""
    k = min(n_coefficients, n_shape)
    betas = np.zeros((n_avatars, n_shape), np.float32)
    betas[:, :k] = np.asarray(jax.random.normal(jax.random.key(seed), (n_avatars, k))) * scale
    return betas


def take_window(n_frames: int, max_frames: Optional[int]) -> np.ndarray:
    """Consecutive frame indices of a take shown in the video: all of them, or ``max_frames``
    consecutive ones from the middle (a video needs consecutive frames; the middle of a take is
    rarely its neutral rest)."""
    if max_frames is None or max_frames >= n_frames:
        return np.arange(n_frames)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    start = (n_frames - max_frames) // 2
    return np.arange(start, start + max_frames)


def figure_data(world: World, *, calibration: CalibrationConfig = CalibrationConfig(),
                weights: InversionWeights = InversionWeights(), inversion: InversionConfig = InversionConfig(),
                performer: Optional[str] = None, tracker: Optional[str] = None, take: str = "pangram",
                max_frames: Optional[int] = None, seed: int = 0, n_avatars: int = 2,
                avatar_coefficients: int = 10, avatar_scale: float = 1.0,
                hold_frames_per_expression: Optional[int] = None, progress=None) -> FigureData:
    """Build both variants for (performer, tracker) as :func:`flamejax.evaluate.evaluate_world`
    does, track the Simon-Says hold frames (all, or at most ``hold_frames_per_expression``
    evenly spaced ones of each expression's hold) and ``take`` (at most ``max_frames``
    consecutive frames, :func:`take_window`) with each, and retarget the take onto ``n_avatars``
    random avatars (:func:`random_avatars` with ``seed``). performer, tracker: default the
    world's first. progress: called with a line of text per step."""
    say = progress or (lambda _msg: None)
    performer = next(iter(world.performers)) if performer is None else performer
    tracker = next(iter(world.tracked)) if tracker is None else tracker
    if performer not in world.performers:
        raise ValueError(f"unknown performer {performer!r}; the world has {list(world.performers)}")
    if tracker not in world.tracked:
        raise ValueError(f"unknown tracker {tracker!r}; the world has {list(world.tracked)}")
    if take not in world.sequences[performer]:
        raise ValueError(f"unknown take {take!r}; the world has {list(world.sequences[performer])}")
    model, cs = world.generic.model, world.control_set
    tweakers = np.asarray(cs.tweaker_mask, bool)
    beta = jnp.asarray(world.performers[performer].beta, model.dtype)
    combinations = jnp.asarray(cs.simon_says.combination_targets, model.dtype)
    seq, ss_geometry, data = calibration_samples(world, performer, tracker)

    variants: dict = {}
    for builder in (baseline_variant, calibrated_variant):
        ctx = VariantContext(world, performer, tracker, beta, seq, ss_geometry, data, combinations,
                             calibration, weights, inversion, tweakers, dict(variants))
        variant = builder(ctx)
        variants[variant.name] = variant
        shown = {k: v for k, v in variant.info.items() if k != "history"}   # the per-iteration values: W&B's
        say(f"{performer} {tracker}: built {variant.name}" + (f" {shown}" if shown else ""))

    hold_frames = np.flatnonzero(seq.hold >= 0)
    if hold_frames_per_expression is not None:
        if hold_frames_per_expression < 1:
            raise ValueError(f"hold_frames_per_expression must be >= 1 or None, got {hold_frames_per_expression}")
        kept = []
        for e in np.unique(seq.hold[hold_frames]):
            members = hold_frames[seq.hold[hold_frames] == e]
            kept.append(members[frame_subset(len(members), hold_frames_per_expression)])
        hold_frames = np.concatenate(kept)
    take_seq = world.sequences[performer][take]
    frames = take_window(len(take_seq.controls), max_frames)
    take_geometry = ss_geometry if take == TRAINING_TAKE else tracked_geometry(world, tracker, performer, take)
    take_tracked = np.asarray(take_geometry[frames])
    # both sets of frames in one call per variant: one compiled tracker (sequences longer than a
    # block share one pooled program), whatever the two lengths are
    targets = np.concatenate([ss_geometry[hold_frames], take_tracked])
    # up to 64 frames: one vmapped call (compiles a little faster than the pool of 16 slots and
    # does not pad the frames to the pool's 1,024-frame chunk)
    block = len(targets) if len(targets) <= 64 else 16
    hold_solved, take_solved = {}, {}
    for name, variant in variants.items():
        problem = inversion_problem(model, variant.rig, beta, tweakers=tweakers, exprdirs=variant.exprdirs)
        solved, _ = track_controls(problem, targets, weights, inversion, block=block)
        solved = np.asarray(solved)
        hold_solved[name], take_solved[name] = solved[:len(hold_frames)], solved[len(hold_frames):]
        say(f"{performer} {tracker}: tracked {len(targets)} frames with the {name} rig")

    avatars = random_avatars(model.n_shape, n_avatars, seed=seed, n_coefficients=avatar_coefficients,
                             scale=avatar_scale)
    retargeted = {name: np.stack([np.asarray(retarget(model, world.generic.rig, take_solved[name], shape=a))
                                  for a in avatars]) for name in variants}
    return FigureData(performer, tracker, take, tuple(cs.names), tweakers, tuple(cs.simon_says.expression_names),
                      hold_frames, np.asarray(seq.hold[hold_frames]), np.asarray(seq.controls[hold_frames]),
                      hold_solved, frames, take_tracked, take_solved, avatars, retargeted,
                      np.asarray(model.faces), {n: dict(v.info) for n, v in variants.items()})


def pick_simon_says_frame(data: FigureData) -> tuple[int, int]:
    """(expression index, position in ``data.hold_frames``) for Fig. 1: the expression whose
    solved controls calibration changes most (hold-mean L1 distance between the two variants'
    controls), and within its hold the frame whose change is closest to that mean (a typical
    frame of the hold, not its most extreme)."""
    diff = np.abs(data.hold_solved["calibrated"] - data.hold_solved["baseline"]).sum(1)
    labels = np.unique(data.hold)
    means = np.array([diff[data.hold == e].mean() for e in labels])
    expression = int(labels[np.argmax(means)])
    members = np.flatnonzero(data.hold == expression)
    position = int(members[np.argmin(np.abs(diff[members] - means.max()))])
    return expression, position


def pick_take_frame(data: FigureData) -> int:
    """Index into ``data.take_frames`` for Fig. 3: the frame where the two variants' retargets
    differ most (RMS vertex distance, mean over avatars)."""
    d = data.retargeted["calibrated"] - data.retargeted["baseline"]          # (A, T, V, 3)
    rms = np.sqrt(np.mean(np.sum(d ** 2, -1), -1)).mean(0)                   # (T,)
    return int(np.argmax(rms))


# ---------------------------------------------------------------- Fig. 1


def plot_controls(names: Sequence[str], uncalibrated, calibrated, path: os.PathLike, *, intended=None,
                  tweakers=None, title: Optional[str] = None, threshold: float = 0.02) -> Path:
    """Fig. 1: the controls solved on one frame with the uncalibrated and the calibrated rig, as
    two horizontal bar charts sharing the control axis. names (K,); uncalibrated, calibrated,
    intended (optional) (K,) in [0, 1]; tweakers (K,) bool (their names drawn in red). Only the
    controls above ``threshold`` in at least one of them are shown. Writes a PNG -> its path."""
    u, c = np.asarray(uncalibrated, float), np.asarray(calibrated, float)
    k = len(names)
    if u.shape != (k,) or c.shape != (k,):
        raise ValueError(f"uncalibrated and calibrated must be ({k},), got {u.shape} and {c.shape}")
    t = None if intended is None else np.asarray(intended, float)
    if t is not None and t.shape != (k,):
        raise ValueError(f"intended must be ({k},), got {t.shape}")
    shown = (u > threshold) | (c > threshold) | (False if t is None else t > threshold)
    ids = np.flatnonzero(shown)
    if len(ids) == 0:                                     # nothing active: show the largest few
        ids = np.argsort(-(u + c))[:5]
    n = len(ids)
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(10, 1.6 + 0.28 * n), constrained_layout=True)
    y = np.arange(n)[::-1]
    for ax, values, key in zip(axes, (u, c), ("baseline", "calibrated")):
        active = int(np.sum(values > threshold))
        ax.barh(y, values[ids], color=CONTROL_COLORS[key], height=0.7, label="solved")
        if t is not None:
            ax.barh(y, t[ids], fill=False, edgecolor="black", linewidth=1.0, height=0.7, label="intended")
        ax.set_xlim(0, 1.02)
        ax.set_title(f"{VARIANT_TITLES[key]} rig: {active} control{'s' * (active != 1)} > {threshold:g}")
        ax.set_xlabel("control value")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([names[i] for i in ids], fontsize=8)
    if tweakers is not None:
        tw = np.asarray(tweakers, bool)
        for label, i in zip(axes[0].get_yticklabels(), ids):
            if tw[i]:
                label.set_color("#b2182b")
    if t is not None:
        axes[1].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------- Fig. 3 and the video


def save_figure(fig, path: os.PathLike) -> Path:
    """Save a matplotlib figure as ``path`` (PNG at >= 100 dpi) atomically, close it -> the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=fig.dpi if fig.dpi >= 100 else 100)
    plt.close(fig)
    os.replace(tmp, path)      # a reader never sees half a file
    return path


def _text_image(text: str, width: int, height: int, *, fontsize: float = 11.0,
                background=(255, 255, 255)) -> np.ndarray:
    """(height, width, 3) uint8: ``text`` centred, drawn by matplotlib (once per label; the video
    reuses the bitmaps on every frame)."""
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=np.asarray(background) / 255)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=fontsize)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image[:height, :width]


def difference_colors(distance_mm, vmax_mm: float, cmap: str = "magma_r") -> np.ndarray:
    """(V,) per-vertex distances (mm) -> (V, 3) colours in [0, 1] on ``cmap`` over [0, vmax_mm]."""
    return np.asarray(matplotlib.colormaps[cmap](np.clip(np.asarray(distance_mm) / max(vmax_mm, 1e-9), 0, 1)))[:, :3]


class RetargetPanels:
    """Renders the retargeting grid of one frame: rows = avatars, columns = the performer's tracked
    mesh | the avatar with the uncalibrated controls | with the calibrated controls | their
    per-vertex distance (mm, colour). One camera frames every mesh of every frame (so the video
    does not wobble and the avatars' sizes compare); ``cell`` pixels per panel; ``yaw`` radians
    turns the view (three-quarter views read shape better than the front)."""

    COLUMNS = ("performer (tracked)", "uncalibrated controls", "calibrated controls", "difference (mm)")

    def __init__(self, data: FigureData, *, cell: int = 256, yaw: float = 0.35, vmax_mm: Optional[float] = None,
                 supersample: int = 1):
        self.data, self.cell, self.supersample = data, int(cell), supersample
        rotation = R.yaw_rotation(yaw)
        meshes = [data.take_tracked] + [data.retargeted[v] for v in VARIANTS]
        self.camera = R.fit_camera([m.reshape(-1, 3) for m in meshes], cell, rotation=rotation)
        dist = np.linalg.norm(data.retargeted["calibrated"] - data.retargeted["baseline"], axis=-1) * 1e3
        self.distance_mm = dist                                                     # (A, T, V)
        # one colour scale for the whole sequence: the 99th percentile keeps a single spike from
        # washing the rest out
        self.vmax_mm = float(vmax_mm) if vmax_mm is not None else max(float(np.percentile(dist, 99)), 0.05)

    def cells(self, t: int) -> list[list[np.ndarray]]:
        """Frame ``t`` (index into ``data.take_frames``) -> rows of (cell, cell, 3) uint8 panels."""
        d, f, k = self.data, self.data.faces, self.supersample
        camera = self.camera
        performer = R.render(d.take_tracked[t], f, camera, color=PERFORMER_COLOR, supersample=k)
        rows = []
        for a in range(len(d.avatars)):
            base = R.render(d.retargeted["baseline"][a, t], f, camera, color=AVATAR_COLOR, supersample=k)
            cal = R.render(d.retargeted["calibrated"][a, t], f, camera, color=AVATAR_COLOR, supersample=k)
            heat = R.render(d.retargeted["calibrated"][a, t], f, camera, supersample=k, ambient=0.55,
                            color=difference_colors(self.distance_mm[a, t], self.vmax_mm))
            rows.append([performer, base, cal, heat])
        return rows

    def frame(self, t: int, *, header: Optional[np.ndarray] = None, row_labels: Optional[list] = None) -> np.ndarray:
        """Frame ``t`` as one image: the optional header strip above the grid, row labels (images
        of width ``label_width``) left of each row."""
        rows = []
        for i, cells in enumerate(self.cells(t)):
            row = R.side_by_side(cells)
            if row_labels is not None:
                row = R.side_by_side([row_labels[i], row])
            rows.append(row)
        image = np.concatenate(rows, 0)
        return image if header is None else np.concatenate([header, image], 0)


def plot_retarget(data: FigureData, path: os.PathLike, *, t: Optional[int] = None, cell: int = 320,
                  yaw: float = 0.35, title: Optional[str] = None) -> Path:
    """Fig. 3: one frame of the take (default :func:`pick_take_frame`) as a labelled grid (rows =
    avatars; columns = :attr:`RetargetPanels.COLUMNS`, with a colour bar for the difference).
    Writes a PNG -> its path."""
    t = pick_take_frame(data) if t is None else int(t)
    panels = RetargetPanels(data, cell=cell, yaw=yaw, supersample=2)
    grid = panels.cells(t)
    n_rows, n_cols = len(grid), len(grid[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.6, 2.7 * n_rows + 0.7), squeeze=False,
                             constrained_layout=True)
    for r, row in enumerate(grid):
        for c, image in enumerate(row):
            ax = axes[r, c]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(RetargetPanels.COLUMNS[c], fontsize=10)
        rms = np.sqrt(np.mean(panels.distance_mm[r, t] ** 2))
        axes[r, 0].set_ylabel(f"avatar {r + 1}", fontsize=10)
        axes[r, 2].set_xlabel(f"RMS change {rms:.2f} mm", fontsize=8)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, panels.vmax_mm), cmap="magma_r")
    fig.colorbar(mappable, ax=axes[:, -1].tolist(), shrink=0.8, label="|calibrated - uncalibrated| (mm)")
    frame = int(data.take_frames[t])
    fig.suptitle(title or f"{data.performer} ({data.tracker}), {data.take} frame {frame}: retargeted onto "
                 f"{n_rows} random avatars", fontsize=11)
    return save_figure(fig, path)


def write_video(frames: Iterable[np.ndarray], path: os.PathLike, *, fps: float = 30.0, quality: float = 7.0,
                n_frames: Optional[int] = None, progress: bool = False) -> Path:
    """An H.264 MP4 (yuv420p, so every player reads it) of frames: a (T, H, W, 3) uint8 array or
    any iterable of (H, W, 3) uint8 images of one size (streamed: the video is never held in
    memory). Odd sizes are padded to even ones (yuv420p halves the chroma resolution) by
    repeating the last row/column. quality: imageio-ffmpeg's 0-10 scale; n_frames: the count, for
    the progress bar only. Written to a temporary name and renamed -> the path."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if n_frames is None and hasattr(frames, "__len__"):
        n_frames = len(frames)
    if progress:
        from tqdm import tqdm
        frames = tqdm(frames, total=n_frames, desc=f"video {path.name}", unit="frame")
    size = None
    count = 0
    # JAX warns on every os.fork(); the writer's only starts the ffmpeg binary (fork + exec)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        # macro_block_size=1: imageio would otherwise resize to multiples of 16 (we pad to even instead)
        writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
                                    pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
        try:
            for image in frames:
                image = np.asarray(image)
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(f"video frames must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
                if size is None:
                    size = image.shape[:2]
                elif image.shape[:2] != size:
                    raise ValueError(f"video frame {count} is {image.shape[:2]}, the first was {size}")
                pad = ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0))
                writer.append_data(np.pad(image, pad, mode="edge") if any(p[1] for p in pad) else image)
                count += 1
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.close()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("write_video needs at least one frame")
    os.replace(tmp, path)
    return path


def retarget_video(data: FigureData, path: os.PathLike, *, fps: Optional[float] = None, cell: int = 256,
                   yaw: float = 0.35, progress: bool = True) -> Path:
    """The whole take's retargeting grid (:class:`RetargetPanels`, labelled) as an MP4, one video
    frame per frame of ``data.take_frames``; fps default 30."""
    panels = RetargetPanels(data, cell=cell, yaw=yaw)
    n_cols = len(RetargetPanels.COLUMNS)
    label_w = 28
    title = _text_image(f"{data.performer} ({data.tracker}), {data.take}: retargeted with the uncalibrated and "
                        f"the calibrated rig's controls (difference: 0 - {panels.vmax_mm:.2f} mm)",
                        label_w + n_cols * cell, 26, fontsize=10)
    heads = R.side_by_side([np.full((24, label_w, 3), 255, np.uint8)]
                           + [_text_image(c, cell, 24, fontsize=10) for c in RetargetPanels.COLUMNS])
    header = np.concatenate([title, heads], 0)
    row_labels = [np.rot90(_text_image(f"avatar {a + 1}", cell, label_w, fontsize=10)).copy()
                  for a in range(len(data.avatars))]
    frames = (panels.frame(t, header=header, row_labels=row_labels) for t in range(len(data.take_frames)))
    return write_video(frames, path, fps=30.0 if fps is None else fps, n_frames=len(data.take_frames),
                       progress=progress)


# ---------------------------------------------------------------- everything


def make_figures(world: World, *, calibration: CalibrationConfig, weights: InversionWeights,
                 inversion: InversionConfig, out_dir: os.PathLike, performer: Optional[str] = None,
                 tracker: Optional[str] = None, take: str = "pangram", max_frames: Optional[int] = None,
                 seed: int = 0, n_avatars: int = 2, cell: int = 256, hold_frames_per_expression: Optional[int] = None,
                 progress=None, video_progress: bool = True) -> dict[str, Path]:
    """Compute (:func:`figure_data`) and write ``fig1_controls.png`` (Fig. 1 on the Simon-Says
    frame :func:`pick_simon_says_frame` picks), ``fig3_retarget.png`` (Fig. 3 on the frame
    :func:`pick_take_frame` picks), ``retarget.mp4`` (the take, at most ``max_frames``
    consecutive frames, :func:`take_window`) and ``figures.json`` (what was picked, and the
    variants' info) into ``out_dir`` -> {"fig1", "fig3", "video", "info": path}. The other
    arguments are :func:`figure_data`'s (hold_frames_per_expression: fewer Simon-Says frames
    tracked, for quick runs); cell: pixels per video panel; progress: a callable given a line per
    step; video_progress: a tqdm bar over the video's frames."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = figure_data(world, calibration=calibration, weights=weights, inversion=inversion, performer=performer,
                       tracker=tracker, take=take, max_frames=max_frames, seed=seed, n_avatars=n_avatars,
                       hold_frames_per_expression=hold_frames_per_expression, progress=progress)
    expression, pos = pick_simon_says_frame(data)
    frame = int(data.hold_frames[pos])
    name = data.expressions[expression]
    paths = {"fig1": plot_controls(
        data.names, data.hold_solved["baseline"][pos], data.hold_solved["calibrated"][pos], out / FIGURE_FILES["fig1"],
        intended=data.hold_intended[pos], tweakers=data.tweakers,
        title=f"Simon-Says \"{name}\" ({data.performer}, {data.tracker}, frame {frame}): controls solved with "
              f"the uncalibrated vs the calibrated rig")}
    t = pick_take_frame(data)
    paths["fig3"] = plot_retarget(data, out / FIGURE_FILES["fig3"], t=t)
    paths["video"] = retarget_video(data, out / FIGURE_FILES["video"], cell=cell,
                                    fps=world.sequences[data.performer][data.take].fps, progress=video_progress)
    info = {"performer": data.performer, "tracker": data.tracker, "take": data.take,
            "fig1": {"expression": name, "expression_index": expression, "simon_says_frame": frame,
                     "l1_change": float(np.abs(data.hold_solved["calibrated"][pos]
                                               - data.hold_solved["baseline"][pos]).sum())},
            "fig3": {"take_frame": int(data.take_frames[t])},
            "video": {"frames": len(data.take_frames), "first_frame": int(data.take_frames[0])},
            # the avatars' identities up to their last non-zero shape coefficient (the rest are 0)
            "avatars": data.avatars[:, :int(np.max(np.nonzero(np.any(data.avatars != 0, 0))[0], initial=-1)) + 1].tolist(),
            "variants": _jsonable(data.info), "world": world.config.key()}
    tmp = out / f".{FIGURE_FILES['info']}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out / FIGURE_FILES["info"])
    paths["info"] = out / FIGURE_FILES["info"]
    return paths


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return x


# ---------------------------------------------------------------- sweeps


def _number(value) -> Optional[float]:
    """A metric or parameter value as a float; None for missing / NaN / not a number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _done(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status", "done") == "done"]


def _short(param: str) -> str:
    return param.rsplit(".", 1)[-1]


def _fmt(value) -> str:
    v = _number(value)
    return str(value) if v is None else f"{v:g}"


def _use_log(values) -> bool:
    v = np.asarray([x for x in values if x is not None], float)
    return len(v) > 1 and bool(np.all(v > 0)) and v.max() / v.min() > 10


def plot_sweep(rows: Sequence[Mapping[str, Any]], params: Sequence[str], metrics: Sequence[str],
               path: os.PathLike, *, title: Optional[str] = None) -> Path:
    """Sweep plots: rows one dict per job (``job``, ``status`` "done"/"failed", each parameter of
    ``params`` and each metric of ``metrics``: numbers, None/NaN where missing). One subplot per
    (metric, parameter): the metric against that parameter (log axis when every value is > 0
    and they span more than 10x), one line per combination of the other parameters' values.
    Failed jobs and missing values are left out (the count of failed jobs is in the title).
    Writes a PNG -> its path."""
    if not params or not metrics:
        raise ValueError("plot_sweep needs at least one parameter and one metric")
    done = _done(rows)
    failed = len(rows) - len(done)
    fig, axes = plt.subplots(len(metrics), len(params), squeeze=False, constrained_layout=True,
                             figsize=(4.2 * len(params), 3.0 * len(metrics)))
    for i, metric in enumerate(metrics):
        for j, param in enumerate(params):
            ax = axes[i, j]
            others = [p for p in params if p != param]
            groups: dict = {}
            for r in done:
                x, y = _number(r.get(param)), _number(r.get(metric))
                if x is None or y is None:
                    continue
                groups.setdefault(tuple(_fmt(r.get(p)) for p in others), []).append((x, y))
            for key, points in sorted(groups.items(), key=lambda kv: [(_number(v) or 0.0, v) for v in kv[0]]):
                points.sort()
                label = ", ".join(f"{_short(p)}={v}" for p, v in zip(others, key)) or None
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            xs = [x for pts in groups.values() for x, _ in pts]
            if _use_log(xs):
                ax.set_xscale("log")
            ax.set_xlabel(param)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if not groups:
                ax.text(0.5, 0.5, "no finished job", ha="center", va="center", transform=ax.transAxes)
            elif others and len(groups) > 1:
                ax.legend(fontsize=7)
    fig.suptitle(title or f"sweep: {len(done)} job{'s' * (len(done) != 1)}"
                 + (f" ({failed} failed, not shown)" if failed else ""), fontsize=10)
    return save_figure(fig, path)


def plot_tradeoff(rows: Sequence[Mapping[str, Any]], x_metric: str, y_metric: str, path: os.PathLike, *,
                  label_params: Sequence[str] = (), title: Optional[str] = None) -> Path:
    """A scatter of two metrics over the finished jobs (e.g. geometry error vs sparsity), each
    point labelled with its values of ``label_params``; the lower-left (Pareto) front of the two
    (both lower-is-better) is joined by a line. Writes a PNG -> its path."""
    points = []
    for r in _done(rows):
        x, y = _number(r.get(x_metric)), _number(r.get(y_metric))
        if x is not None and y is not None:
            points.append((x, y, ", ".join(f"{_short(p)}={_fmt(r.get(p))}" for p in label_params)))
    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    if points:
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        ax.scatter(xs, ys, color="#2166ac", zorder=3)
        for x, y, label in points:
            if label:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        order = np.lexsort((ys, xs))
        front, best = [], np.inf
        for i in order:
            if ys[i] < best:
                front.append(i)
                best = ys[i]
        ax.plot(xs[front], ys[front], color="#b2182b", alpha=0.6, label="Pareto front")
        ax.legend(fontsize=8)
        if _use_log(list(xs)):
            ax.set_xscale("log")
        if _use_log(list(ys)):
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no finished job", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(x_metric)
    ax.set_ylabel(y_metric)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{y_metric} vs {x_metric} ({len(points)} jobs)", fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Path]:
    """``python -m experiments.figures [hydra overrides of conf/table1.yaml] [--out DIR] ...``"""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/table1.yaml (world, calibration, tracker)")
    ap.add_argument("--out", type=Path, default=Path("outputs/figures"))
    ap.add_argument("--performer")
    ap.add_argument("--tracker")
    ap.add_argument("--take", default="pangram")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cell", type=int, default=256, help="pixels per video panel")
    args = ap.parse_args(argv)

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.configs import Table1Config
    from flamejax.synthetic.world import load_or_make_world

    conf_dir = str(Path(__file__).resolve().parent.parent / "conf")
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        dcfg = compose(config_name="table1", overrides=list(args.overrides))
    cfg = Table1Config.from_dict(OmegaConf.to_container(dcfg, resolve=True))
    if cfg.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", cfg.compilation_cache)
    world = load_or_make_world(cfg.data.world, cfg.data.cache_dir)
    paths = make_figures(world, calibration=cfg.calibration, weights=cfg.tracker.weights,
                         inversion=cfg.tracker.inversion, out_dir=args.out, performer=args.performer,
                         tracker=args.tracker, take=args.take, max_frames=args.max_frames, seed=args.seed,
                         cell=args.cell, progress=print)
    for key, p in paths.items():
        print(f"{key}: {p}")
    return paths


if __name__ == "__main__":
    main()
