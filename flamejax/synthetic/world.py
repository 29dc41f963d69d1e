"""The synthetic world: a generic semantic FLAME, performers, their sequences and two trackers.

    world = load_or_make_world(WorldConfig(seed=0), cache_dir=".flamejax_cache")
    world.generic.model, world.generic.rig           # generic FLAME (PCA expression basis), fitted B
    world.sequences["performer00"]["simon_says"]     # intended controls per frame (the truth)
    world.tracked["OS1"]["performer00"]["rom1"]      # what tracker OS1 reports for that take
    performer_geometry(world, "performer00", "rom1") # (T, V, 3) the performer's true meshes
    tracked_geometry(world, "OS1", "performer00", "simon_says")  # (T, V, 3) tracked, canonical pose
    simon_says_masks(world)                          # per expression: the vertex ids it moves

Everything is deterministic given the :class:`WorldConfig`, whose fields are the world's knobs
(fix them before running a method against the world; results must say which world they used).

Cache layout (``<cache_dir>/world-<key>/``, key = hash of the config):
- ``config.json``: the config the world was made from;
- ``performers.npz``: per performer ``<name>/beta``, ``/gains``, ``/crosstalk``, ``/residuals``;
- ``sequences.npz``: per performer and take ``<performer>/<take>/controls|hold|global_pose|neck_pose``;
- ``tracked_<tracker>.npz``: ``<performer>/<take>/expression|jaw_pose|global_pose|neck_pose|
  translation|residual|fit_residual``.
The generic model, target rig and B are rebuilt from the seed (deterministic, a few seconds).
Files are written to a temporary name and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from flamejax.io.npy import read_npz
from flamejax.semantic.controls import ControlSet, load_control_set
from flamejax.synthetic.performers import Performer, SignatureConfig, make_performers, performer_vertices
from flamejax.synthetic.semantic_model import GenericSemanticModel, make_generic_semantic_model
from flamejax.synthetic.sequences import (Sequence, SequenceConfig, pangram_sequence, rom_sequence,
                                          simon_says_sequence)
from flamejax.synthetic.target_rig import target_rig_vertices
from flamejax.synthetic.trackers import (OS1, OS2, TrackedSequence, TrackerConfig, canonical_pose, track,
                                        tracked_vertices)
from flamejax.synthetic import make_head

TAKES = ("simon_says", "rom1", "rom2", "pangram")
_SEQUENCE_FIELDS = ("controls", "hold", "global_pose", "neck_pose")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The world's knobs. size: head resolution ("full" ~5k vertices, "small", "tiny")."""

    seed: int = 0
    size: str = "small"
    control_set: str = "metahuman"
    n_performers: int = 3
    signature: SignatureConfig = SignatureConfig()
    sequences: SequenceConfig = SequenceConfig()
    trackers: tuple[tuple[str, TrackerConfig], ...] = (("OS1", OS1), ("OS2", OS2))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trackers"] = {name: dataclasses.asdict(cfg) for name, cfg in self.trackers}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldConfig":
        d = dict(d)
        sig = dict(d.pop("signature", {}))
        if "link_prob" in sig:
            sig["link_prob"] = tuple(tuple(x) for x in sig["link_prob"])
        seq = dict(d.pop("sequences", {}))
        for k in ("rom_intensity", "head_freq"):
            if k in seq:
                seq[k] = tuple(seq[k])
        trackers = d.pop("trackers", None)
        trackers = (cls.trackers if trackers is None else
                    tuple((name, TrackerConfig(**cfg)) for name, cfg in trackers.items()))
        return cls(signature=SignatureConfig(**sig), sequences=SequenceConfig(**seq), trackers=trackers, **d)

    def key(self) -> str:
        """A short hash of the config: the cache folder's name."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class World(NamedTuple):
    """config; control_set; generic (model, target rig, fitted B, fit residuals); performers;
    sequences[performer][take] -> Sequence; tracked[tracker][performer][take] -> TrackedSequence.

    A user's data folder is read into the same container (:mod:`flamejax.user_data`), with what
    only real data has: masks, the Simon-Says region masks of the face-calibration folder (None:
    derived from the synthetic target rig, :func:`simon_says_masks`); frame_ids[performer][take]
    (T,) the tracker's frame numbers and valid[performer][take] (T,) bool its usable frames (None:
    ``arange(T)`` and all valid, :func:`take_frame_ids` / :func:`take_valid`). On such a world the
    truth is unknown: ``generic.target`` is None and the sequences' controls are NaN outside the
    Simon-Says holds."""

    config: Any
    control_set: ControlSet
    generic: GenericSemanticModel
    performers: dict[str, Performer]
    sequences: dict[str, dict[str, Sequence]]
    tracked: dict[str, dict[str, dict[str, TrackedSequence]]]
    masks: Optional[tuple] = None
    frame_ids: Optional[dict] = None
    valid: Optional[dict] = None


def _rngs(cfg: WorldConfig, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence([cfg.seed, 0x3D]).spawn(n)]


def _make_takes(cfg: WorldConfig, control_set: ControlSet, rng: np.random.Generator) -> dict[str, Sequence]:
    seeds = rng.integers(0, 2**63 - 1, size=len(TAKES))
    r = [np.random.default_rng(s) for s in seeds]
    return {
        "simon_says": simon_says_sequence(control_set, r[0], cfg.sequences),
        "rom1": rom_sequence(control_set, r[1], cfg.sequences, "rom1"),
        "rom2": rom_sequence(control_set, r[2], cfg.sequences, "rom2"),
        "pangram": pangram_sequence(control_set, r[3], cfg.sequences),
    }


def _geometry(generic: GenericSemanticModel, performer: Performer, seq: Sequence) -> np.ndarray:
    return np.asarray(performer_vertices(generic.model, generic.target, performer, seq.controls,
                                         seq.global_pose, seq.neck_pose))


def performer_geometry(world: World, performer: str, take: str) -> np.ndarray:
    """(T, V, 3) metres: the performer's true meshes for one take (recomputed, not cached)."""
    return _geometry(world.generic, world.performers[performer], world.sequences[performer][take])


def tracked_geometry(world: World, tracker: str, performer: str, take: str) -> np.ndarray:
    """(T, V, 3) metres: what ``tracker`` reports for the take, as geometry of the generic model
    with the tracked expression and jaw and the performer's identity, in the canonical head pose
    (global and neck rotation zero, no translation): the geometry calibration and rig-inversion
    tracking work on."""
    return np.asarray(tracked_vertices(world.generic.model, canonical_pose(world.tracked[tracker][performer][take])))


def take_frame_ids(world: World, performer: str, take: str) -> np.ndarray:
    """(T,) int64: the tracker's frame number of each frame of the take (its index on the
    synthetic world)."""
    if world.frame_ids is not None:
        return np.asarray(world.frame_ids[performer][take], np.int64)
    return np.arange(len(world.sequences[performer][take].hold), dtype=np.int64)


def take_valid(world: World, performer: str, take: str) -> np.ndarray:
    """(T,) bool: the frames the tracker did not lose (all of them on the synthetic world)."""
    if world.valid is not None:
        return np.asarray(world.valid[performer][take], bool)
    return np.ones(len(world.sequences[performer][take].hold), bool)


def simon_says_masks(world: World, threshold: float = 5e-4) -> list[np.ndarray]:
    """Per Simon-Says expression, the vertex ids (int32) the generic target rig moves by more than
    ``threshold`` metres at that expression's controls (all vertices for an expression that moves
    nothing): face-calibration's ``masks/<i>.npy`` for the synthetic world. A user's world
    carries the masks of its face-calibration folder, returned as they are."""
    if world.masks is not None:
        return list(world.masks)
    model, target = world.generic.model, world.generic.target
    controls = np.concatenate([np.zeros((1, len(target.names))), world.control_set.simon_says.targets])
    neutral, *expressions = target_rig_vertices(model, target, controls)
    masks = []
    for vertices in expressions:
        ids = np.flatnonzero(np.linalg.norm(vertices - neutral, axis=1) > threshold)
        masks.append((ids if len(ids) else np.arange(model.n_vertices)).astype(np.int32))
    return masks


def _track_all(cfg: WorldConfig, generic, performers, sequences) -> dict:
    """tracked[tracker][performer][take]; each run's noise has its own key from the seed. The
    tracker is given the performer's identity (as MICA's estimate would give it)."""
    tracked = {}
    for t_index, (name, tcfg) in enumerate(cfg.trackers):
        tracked[name] = {}
        for p_index, (pname, performer) in enumerate(performers.items()):
            tracked[name][pname] = {}
            for s_index, take in enumerate(TAKES):
                seq = sequences[pname][take]
                key = jax.random.fold_in(jax.random.key(cfg.seed), (t_index * 1000 + p_index) * 10 + s_index)
                tracked[name][pname][take] = track(generic.model, _geometry(generic, performer, seq),
                                                   seq.global_pose, seq.neck_pose, tcfg, key,
                                                   shape=performer.beta)
    return tracked


def make_world(cfg: WorldConfig) -> World:
    """Build the whole world from its config (no cache)."""
    control_set = load_control_set(cfg.control_set)
    generic = make_generic_semantic_model(cfg.seed, cfg.size, control_set.names)
    rng_performers, rng_takes = _rngs(cfg, 2)
    mesh = make_head(cfg.seed, size=cfg.size)
    performers = {p.name: p for p in make_performers(cfg.n_performers, generic.target, control_set,
                                                      generic.model.n_shape, cfg.signature,
                                                      rng_performers, mesh=mesh)}
    take_seeds = rng_takes.integers(0, 2**63 - 1, size=len(performers))
    sequences = {name: _make_takes(cfg, control_set, np.random.default_rng(s))
                 for name, s in zip(performers, take_seeds)}
    tracked = _track_all(cfg, generic, performers, sequences)
    return World(cfg, control_set, generic, performers, sequences, tracked)


# ---------------------------------------------------------------- cache


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def save_world(world: World, folder: os.PathLike) -> Path:
    """Write the world's generated data to ``folder`` in the layout of the module docstring."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_npz(folder / "performers.npz", {f"{n}/{f}": np.asarray(getattr(p, f))
                                          for n, p in world.performers.items()
                                          for f in ("beta", "gains", "crosstalk", "residuals")})
    _save_npz(folder / "sequences.npz", {f"{n}/{t}/{f}": np.asarray(getattr(s, f))
                                         for n, takes in world.sequences.items()
                                         for t, s in takes.items() for f in _SEQUENCE_FIELDS})
    for tracker, per_performer in world.tracked.items():
        _save_npz(folder / f"tracked_{tracker}.npz",
                  {f"{n}/{t}/{f}": np.asarray(getattr(s, f)) for n, takes in per_performer.items()
                   for t, s in takes.items() for f in TrackedSequence._fields if f != "shape"})
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(world.config.to_dict(), indent=2, sort_keys=True))
    os.replace(tmp, folder / "config.json")  # written last: its presence marks a complete world
    return folder


def _group(arrays: dict[str, np.ndarray], depth: int) -> dict:
    out: dict = {}
    for key, value in arrays.items():
        *path, field = key.split("/")
        node = out
        for part in path[:depth]:
            node = node.setdefault(part, {})
        node[field] = value
    return out


def load_world(folder: os.PathLike) -> World:
    """Read a world written by :func:`save_world` (the generic model is rebuilt from the seed)."""
    folder = Path(folder)
    cfg = WorldConfig.from_dict(json.loads((folder / "config.json").read_text()))
    control_set = load_control_set(cfg.control_set)
    generic = make_generic_semantic_model(cfg.seed, cfg.size, control_set.names)
    performers = {name: Performer(name, **fields)
                  for name, fields in _group(read_npz(folder / "performers.npz"), 1).items()}
    sequences = {p: {t: Sequence(t, fps=cfg.sequences.fps, **f) for t, f in takes.items()}
                 for p, takes in _group(read_npz(folder / "sequences.npz"), 2).items()}
    tracked = {}
    for name, _ in cfg.trackers:
        grouped = _group(read_npz(folder / f"tracked_{name}.npz"), 2)
        tracked[name] = {p: {t: TrackedSequence(shape=performers[p].beta, **f) for t, f in takes.items()}
                         for p, takes in grouped.items()}
    return World(cfg, control_set, generic, performers, sequences, tracked)


def load_or_make_world(cfg: WorldConfig, cache_dir: Optional[os.PathLike] = None) -> World:
    """The world for ``cfg``, from ``<cache_dir>/world-<key>/`` if complete there, else made (and
    cached when ``cache_dir`` is given)."""
    if cache_dir is None:
        return make_world(cfg)
    folder = Path(cache_dir) / f"world-{cfg.key()}"
    if (folder / "config.json").exists():
        return load_world(folder)
    world = make_world(cfg)
    save_world(world, folder)
    return world
