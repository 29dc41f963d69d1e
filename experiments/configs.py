"""Typed configs: what the Hydra YAML in conf/ turns into before any library call."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax.numpy as jnp

import flamejax as fj
from flamejax.calibrate import CalibrationConfig
from flamejax.finetune import FinetuneConfig, FinetuneStage
from flamejax.synthetic.world import TAKES, WorldConfig
from flamejax.track import InversionConfig, InversionWeights
from flamejax.user_data import UserDataConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """conf/model/*.yaml: the embedded synthetic model or a FLAME file of the user's."""

    kind: str = "synthetic"  # synthetic | file
    seed: int = 0
    size: str = "full"
    path: Optional[str] = None
    landmarks: Optional[Any] = None  # one path, or a list of paths (RingNet static + dynamic)
    mediapipe: Optional[str] = None
    masks: Optional[str] = None
    n_shape: Optional[int] = None
    n_expr: Optional[int] = None

    def __post_init__(self):
        if self.kind == "file" and self.path in (None, "", "???"):
            raise ConfigError("model.path is required with a FLAME file (model=file / flame2020 / flame2023): "
                              "model.path=/data/FLAME2020/generic_model.pkl")

    def build(self, dtype=jnp.float32) -> fj.FlameModel:
        if self.kind == "synthetic":
            kwargs = {k: v for k, v in (("n_shape", self.n_shape), ("n_expr", self.n_expr)) if v is not None}
            return fj.synthetic.make_flame(seed=self.seed, size=self.size, dtype=dtype, **kwargs)
        if self.kind == "file":
            return fj.load_flame(self.path, n_shape=self.n_shape, n_expr=self.n_expr, dtype=dtype,
                                 landmarks=self.landmarks, mediapipe=self.mediapipe, masks=self.masks)
        raise ValueError(f"model.kind must be 'synthetic' or 'file', got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """conf/forward.yaml: the forward-pass demo job."""

    model: ModelConfig
    seed: int = 0
    batch_size: int = 64
    n_meshes: int = 4
    expression_scale: float = 1.0
    benchmark_repeats: int = 10

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ForwardConfig":
        d = {k: v for k, v in d.items() if k != "hydra"}
        return cls(model=ModelConfig(**d.pop("model")), **d)


# ---------------------------------------------------------------- table1 (conf/table1.yaml)


class ConfigError(ValueError):
    """A config the job cannot run: an unknown key or a value out of range, named by its path."""


def _known(d: Mapping[str, Any], allowed, where: str) -> dict:
    """``d`` as a dict, after checking that every key is in ``allowed`` (else name ``where.key``)."""
    allowed = list(allowed)
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(allowed)})")
    return dict(d)


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)


def _build(cls, d: Mapping[str, Any], where: str, exclude: tuple[str, ...] = (), **fixed):
    """``cls(**d, **fixed)`` for a library dataclass/NamedTuple: keys outside its fields (or in
    ``exclude``) and its own validation errors are reported under ``where``."""
    kwargs = _known(d, [n for n in _names(cls) if n not in exclude and n not in fixed], where)
    try:
        return cls(**kwargs, **fixed)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    """conf/data/synthetic.yaml: the world's config (its key names the cache folder) and the
    cache folder (None: the world is made in memory on every run)."""

    world: WorldConfig
    cache_dir: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SyntheticDataConfig":
        d = dict(d)
        kind = d.pop("kind", "synthetic")
        if kind != "synthetic":
            raise ConfigError(f"data.kind must be 'synthetic' (the embedded world), got {kind!r}")
        cache_dir = d.pop("cache_dir", None)
        _known(d, _names(WorldConfig), "data")
        try:
            world = WorldConfig.from_dict(d)
        except (TypeError, ValueError) as e:  # the nested signature / sequences / trackers blocks
            raise ConfigError(f"data: {e}") from e
        return cls(world, cache_dir)


@dataclasses.dataclass(frozen=True)
class FolderDataConfig:
    """conf/data/folder.yaml: a user's data folder (:class:`flamejax.user_data.UserDataConfig`,
    kept as ``world`` so that every stage reads ``cfg.data.world.key()`` alike); nothing is cached."""

    world: UserDataConfig
    cache_dir: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FolderDataConfig":
        d = dict(d)
        d.pop("kind")
        return cls(_build(UserDataConfig, d, "data"))


def data_from_dict(d: Mapping[str, Any]):
    """conf/data/*.yaml -> SyntheticDataConfig (kind synthetic) or FolderDataConfig (kind folder)."""
    kind = d.get("kind", "synthetic")
    if kind == "folder":
        return FolderDataConfig.from_dict(d)
    if kind != "synthetic":
        raise ConfigError(f"data.kind must be 'synthetic' (the embedded world) or 'folder' (data=folder "
                          f"data.root=...), got {kind!r}")
    return SyntheticDataConfig.from_dict(d)


def user_data(cfg) -> bool:
    """Whether a typed config's data is a user's folder (no truth: no truth-based metrics)."""
    return isinstance(cfg.data, FolderDataConfig)


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """conf/tracker/*.yaml, one flat group: the objective's weights (mm^2, InversionWeights) and
    the solver's settings (InversionConfig)."""

    weights: InversionWeights
    inversion: InversionConfig

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrackerConfig":
        w_keys = InversionWeights._fields
        _known(d, list(w_keys) + _names(InversionConfig), "tracker")
        weights = InversionWeights(**{k: float(d[k]) for k in w_keys if k in d})
        inversion = _build(InversionConfig, {k: v for k, v in d.items() if k not in w_keys}, "tracker")
        # the library takes these as given (weights are pytree leaves); a negative one would
        # silently reward activity, so reject it here
        checks = [(k, v, 0) for k, v in weights._asdict().items()]
        checks += [(k, getattr(inversion, k), 1) for k in ("maxiter", "qp_iters")]
        checks += [(k, getattr(inversion, k), 0) for k in ("tol", "xtol", "rtol", "damping", "sweeps")]
        for name, value, low in checks:
            if not value >= low:
                raise ConfigError(f"tracker.{name} must be >= {low}, got {value}")
        return cls(weights, inversion)


def finetune_from_dict(d: Mapping[str, Any]) -> Optional[FinetuneConfig]:
    """conf/finetune/*.yaml -> FinetuneConfig, or None when ``enabled`` is false (no fine-tuned
    column). ``stages`` maps a stage's name to its FinetuneStage fields, run in the YAML's order;
    a stage set to null is left out (how a config derived from another drops one). The tracker's
    weights and solver settings come from the tracker group, so they are no keys here."""
    d = dict(d)
    if not d.pop("enabled", True):
        # an experiment's shortened stages (experiment=quick) may meet finetune=none: nothing to tune
        d.pop("stages", None)
        if d:
            raise ConfigError(f"finetune=none takes no settings, got finetune.{sorted(d)[0]}")
        return None
    if "stages" in d:
        d["stages"] = tuple(_build(FinetuneStage, st, f"finetune.stages.{name}", name=name)
                            for name, st in d["stages"].items() if st is not None)
        if not d["stages"]:
            raise ConfigError("finetune.stages is empty: use finetune=none for no fine-tuned column")
    return _build(FinetuneConfig, d, "finetune", exclude=("weights", "inversion"))


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """conf/table1.yaml's ``evaluation``: what :func:`flamejax.evaluate.evaluate_world` evaluates.
    takes: held-out takes (Table 1's rows: the synthetic world's, checked when the config is
    read; on a user's data its own take names, checked by :meth:`check_world` when the data is
    loaded); training_take: also the Simon-Says take; performers,
    trackers: subsets (None: all); max_frames: at most this many evenly spaced frames per take
    (None: all); calibration_frames: "mean" (each hold's mean) or "all" (every hold frame).

    The ablation knobs (evaluate_world's, module doc of :mod:`flamejax.evaluate`):
    simon_says_exclude: Simon-Says expression names and/or face-region names (brow, eye, nose,
    cheek, mouth, jaw: an expression is in each region holding at least half of its prompted
    controls; Neutral in none) left out of the calibration (and fine-tuning) samples, checked
    against the control set (``controls``) when the config is read; hold_frames: at most this
    many central frames of each Simon-Says hold in those samples (None: all); landmarks_only:
    every rig tracks the takes from the 68 landmarks of the tracked geometry instead of the
    geometry (calibration stays geometric, the metrics are the same). :meth:`evaluate_kwargs`
    is what the jobs pass to evaluate_world / evaluate_grid."""

    takes: tuple[str, ...] = ("rom2", "rom1", "pangram")
    training_take: bool = True
    performers: Optional[tuple[str, ...]] = None
    trackers: Optional[tuple[str, ...]] = None
    max_frames: Optional[int] = None
    calibration_frames: str = "mean"
    simon_says_exclude: tuple[str, ...] = ()
    hold_frames: Optional[int] = None
    landmarks_only: bool = False

    def __post_init__(self):
        # the names: here; whether the data has them: check_synthetic_takes (synthetic world, when
        # the config is read) or the job's check_world (a user's folder, against its takes)
        if (not self.takes or not all(isinstance(t, str) for t in self.takes) or "simon_says" in self.takes
                or len(set(self.takes)) != len(self.takes)):
            raise ConfigError(f"evaluation.takes must be a non-empty list of held-out take names (not simon_says, "
                              f"the calibration data: use training_take), got {list(self.takes)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"evaluation.max_frames must be >= 1 or null, got {self.max_frames}")
        if self.calibration_frames not in ("mean", "all"):
            raise ConfigError(f"evaluation.calibration_frames must be 'mean' or 'all', got {self.calibration_frames!r}")
        if not isinstance(self.simon_says_exclude, tuple) or not all(isinstance(n, str) for n in self.simon_says_exclude):
            raise ConfigError("evaluation.simon_says_exclude must be a list of Simon-Says expression or region "
                              f"names, got {self.simon_says_exclude!r}")
        if self.hold_frames is not None and (isinstance(self.hold_frames, bool) or not isinstance(self.hold_frames, int)
                                             or self.hold_frames < 1):
            raise ConfigError(f"evaluation.hold_frames must be >= 1 or null, got {self.hold_frames!r}")
        if not isinstance(self.landmarks_only, bool):
            raise ConfigError(f"evaluation.landmarks_only must be true or false, got {self.landmarks_only!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], control_set: Optional[str] = None) -> "EvaluationConfig":
        """From the YAML block; control_set: the control set's name (or file) to check
        ``simon_says_exclude``'s names against (None: checked when the evaluation runs)."""
        d = _known(d, _names(cls), "evaluation")
        for k in ("takes", "performers", "trackers"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        exclude = d.get("simon_says_exclude")
        if exclude is None:
            d["simon_says_exclude"] = ()
        elif isinstance(exclude, str):
            d["simon_says_exclude"] = (exclude,)
        elif isinstance(exclude, (list, tuple)):
            d["simon_says_exclude"] = tuple(exclude)
        cfg = cls(**d)
        if control_set is not None and cfg.simon_says_exclude:
            from flamejax.evaluate import excluded_expressions
            from flamejax.semantic.controls import load_control_set

            try:
                cs = load_control_set(control_set)
            except ValueError:
                return cfg   # a bad control set is reported where it is read
            try:
                excluded_expressions(cs, cfg.simon_says_exclude)
            except ValueError as e:
                raise ConfigError(f"evaluation.{e}") from e
        return cfg

    def check_synthetic_takes(self) -> None:
        """The takes are the synthetic world's held-out takes (ConfigError)."""
        held_out = [t for t in TAKES if t != "simon_says"]
        if any(t not in held_out for t in self.takes):
            raise ConfigError(f"evaluation.takes must be a non-empty list of {held_out}, got {list(self.takes)}")

    def check_world(self, world) -> None:
        """The selection (takes, performers, trackers) exists in the loaded world: a user's folder's
        takes are its performers' own (:func:`flamejax.evaluate.check_selection`; ConfigError)."""
        from flamejax.evaluate import check_selection

        try:
            check_selection(world, self.takes, self.training_take, self.trackers, self.performers)
        except ValueError as e:
            raise ConfigError(f"evaluation: {e}") from e

    def evaluate_kwargs(self) -> dict:
        """The selection and ablation keywords of :func:`flamejax.evaluate.evaluate_world` (and
        :func:`flamejax.sweep.evaluate_grid`)."""
        return dict(takes=self.takes, training_take=self.training_take, trackers=self.trackers,
                    performers=self.performers, max_frames=self.max_frames,
                    calibration_frames=self.calibration_frames, simon_says_exclude=self.simon_says_exclude,
                    hold_frames=self.hold_frames, landmarks_only=self.landmarks_only)


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    """conf/logger/*.yaml. kind: "none" (results only in the job directory) or "wandb"
    (experiments/loggers.py). W&B settings (ignored by "none"): project, entity (None: the
    user's default), mode "offline" (default: no network; ``wandb sync`` later), "online" or
    "disabled"; dir: where W&B writes its run folder (None: the job directory); group, name,
    tags: how the run is filed (None: W&B's defaults; a sweep's jobs share the group)."""

    kind: str = "none"
    project: str = "flamejax"
    entity: Optional[str] = None
    mode: str = "offline"
    dir: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in ("none", "wandb"):
            raise ConfigError(f"logger.kind must be 'none' or 'wandb', got {self.kind!r}")
        if self.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode must be 'offline', 'online' or 'disabled', got {self.mode!r}")
        object.__setattr__(self, "tags", tuple(str(t) for t in self.tags))


@dataclasses.dataclass(frozen=True)
class FiguresConfig:
    """table1.yaml's ``figures`` block (experiments/figures.py's make_figures): enabled; performer,
    tracker: whose figures (None: the world's first); take: the retargeted sequence; max_frames:
    at most this many of its frames in the video (None: all); seed: the random avatars; cell:
    pixels per video panel; hold_frames: Simon-Says frames tracked per expression (None: all)."""

    enabled: bool = True
    performer: Optional[str] = None
    tracker: Optional[str] = None
    take: str = "pangram"
    max_frames: Optional[int] = None
    seed: int = 0
    cell: int = 256
    hold_frames: Optional[int] = None

    def __post_init__(self):
        if self.take not in TAKES:
            raise ConfigError(f"figures.take must be one of {TAKES}, got {self.take!r}")
        for name in ("max_frames", "hold_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"figures.{name} must be >= 1 or null, got {value}")
        if self.cell < 32:
            raise ConfigError(f"figures.cell must be >= 32 pixels, got {self.cell}")


def _model_follows_data(cfg) -> None:
    """The model and controls groups agree with the data: on the synthetic world they must be its
    own head and control set (the world makes them; the YAML interpolates them from ``data``); a
    user's folder is read for the model the user gives (model=flame2020 model.path=...)."""
    data, model = cfg.data.world, cfg.model
    if cfg.controls != data.control_set:
        raise ConfigError(f"controls={cfg.controls!r} differs from data.control_set={data.control_set!r}")
    if user_data(cfg):
        return
    if model.kind != "synthetic":
        raise ConfigError(f"model={model.kind} needs user data (data=folder data.root=...); data=synthetic "
                          f"makes its own model (model=synthetic)")
    for field in ("seed", "size"):
        if getattr(model, field) != getattr(data, field):
            raise ConfigError(f"model.{field}={getattr(model, field)!r} differs from the world's "
                              f"data.{field}={getattr(data, field)!r}: the synthetic world makes its own "
                              f"model, set data.{field} instead")


@dataclasses.dataclass(frozen=True)
class Table1Config:
    """conf/table1.yaml: the Table 1 reproduction on the synthetic world, or (data=folder) on a
    user's data, where the truth-based metrics are NaN. ``model`` and ``controls``
    must describe the world's own head and control set (the world makes them; the YAML
    interpolates them from ``data``; a user's folder is read for the model group's FLAME model).
    ``evaluation.takes`` are checked against the synthetic world's held-out takes when the config
    is read, against a user's takes when the data is loaded (:meth:`check_world`); finetune None: no fine-tuned column; compilation_cache:
    JAX's persistent compilation cache folder (None: off); optimized_metric: the metrics.json key
    the job returns to a Hydra sweeper (None: nothing returned)."""

    data: SyntheticDataConfig
    model: ModelConfig
    controls: str
    calibration: CalibrationConfig
    tracker: TrackerConfig
    finetune: Optional[FinetuneConfig]
    evaluation: EvaluationConfig
    logger: LoggerConfig
    figures: FiguresConfig = FiguresConfig()
    task_name: str = "table1"
    compilation_cache: Optional[str] = None
    optimized_metric: Optional[str] = None
    ablation_name: str = "full"

    def __post_init__(self):
        _model_follows_data(self)
        if not user_data(self):   # a user's takes are checked against the data (check_world)
            self.evaluation.check_synthetic_takes()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Table1Config":
        d = _known({k: v for k, v in d.items() if k != "hydra"}, _names(cls), "table1")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ConfigError(f"table1 config lacks {missing[0]!r}")
        controls = _known(d["controls"], ["name"], "controls")["name"]
        return cls(
            data=data_from_dict(d["data"]),
            model=_build(ModelConfig, d["model"], "model"),
            controls=controls,
            calibration=_build(CalibrationConfig, d["calibration"], "calibration"),
            tracker=TrackerConfig.from_dict(d["tracker"]),
            finetune=finetune_from_dict(d["finetune"]),
            evaluation=EvaluationConfig.from_dict(d["evaluation"], control_set=controls),
            logger=_build(LoggerConfig, d["logger"], "logger"),
            figures=_build(FiguresConfig, d.get("figures", {}), "figures"),
            task_name=d.get("task_name", "table1"),
            compilation_cache=d.get("compilation_cache"),
            optimized_metric=d.get("optimized_metric"),
            ablation_name=str(d.get("ablation_name", "full")),
        )

    def check_world(self, world) -> None:
        """The loaded world's model has the component counts the model group says, and the
        evaluation's selection (takes, performers, trackers) is the world's."""
        got = (world.generic.model.n_shape, world.generic.model.n_expr)
        want = (self.model.n_shape, self.model.n_expr)
        if any(w is not None and w != g for w, g in zip(want, got)):
            raise ConfigError(f"model n_shape, n_expr = {want} but the synthetic world's model has {got}")
        evaluation = getattr(self, "evaluation", None)
        if evaluation is not None:
            evaluation.check_world(world)


# ---------------------------------------------------------------- per-stage entry points
# experiments/{calibrate,track,finetune,retarget,evaluate}.py, conf/{calibrate,track,finetune_rig,
# retarget,evaluate}.yaml: every stage composes the same groups as Table 1 (so that one
# experiment preset, e.g. experiment=quick, applies to all of them) plus its own keys.

RIGS = ("generic", "calibrated", "finetuned")
# Table 1's own blocks, which experiment presets (conf/experiment/) may set: a stage that does not
# use one still validates it (a typo fails) and then ignores it
PRESET_BLOCKS = ("evaluation", "figures")


def _performers(value, where: str) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where} must be null (all) or a non-empty list of performer names, got {value!r}")
    return names


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageConfig:
    """The keys every stage shares (as :class:`Table1Config`): data, model (the world's own head),
    controls (the world's control set), calibration, tracker, finetune (None: finetune=none),
    logger, task_name (names the job folder outputs/<task_name>/runs/<time>), compilation_cache
    (JAX's persistent compilation cache folder, None: off). Subclasses add the stage's own keys
    as fields with defaults and set ``STAGE`` (the name unknown keys are reported under)."""

    STAGE = "stage"

    data: Any   # SyntheticDataConfig | FolderDataConfig
    model: ModelConfig
    controls: str
    calibration: CalibrationConfig
    tracker: TrackerConfig
    finetune: Optional[FinetuneConfig]
    logger: LoggerConfig
    task_name: str
    compilation_cache: Optional[str] = None

    def __post_init__(self):
        _model_follows_data(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        d = {k: v for k, v in d.items() if k != "hydra"}
        names = _names(cls)
        foreign = [k for k in PRESET_BLOCKS if k in d and k not in names]
        d = _known(d, names + foreign, cls.STAGE)
        if "evaluation" in foreign:
            evaluation = EvaluationConfig.from_dict(d.pop("evaluation"))
            if d.get("data", {}).get("kind", "synthetic") != "folder":
                evaluation.check_synthetic_takes()
        if "figures" in foreign:
            _build(FiguresConfig, d.pop("figures"), "figures")
        missing = [f.name for f in dataclasses.fields(StageConfig)
                   if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ConfigError(f"{cls.STAGE} config lacks {missing[0]!r}")
        common = dict(
            data=data_from_dict(d.pop("data")),
            model=_build(ModelConfig, d.pop("model"), "model"),
            controls=_known(d.pop("controls"), ["name"], "controls")["name"],
            calibration=_build(CalibrationConfig, d.pop("calibration"), "calibration"),
            tracker=TrackerConfig.from_dict(d.pop("tracker")),
            finetune=finetune_from_dict(d.pop("finetune")),
            logger=_build(LoggerConfig, d.pop("logger"), "logger"),
        )
        return cls(**common, **cls._own(d))

    @classmethod
    def _own(cls, d: dict) -> dict:
        """The stage's own keys (what is left of the config) -> field values."""
        return d

    def check_world(self, world) -> None:
        """The model's component counts are the world's (as Table 1), and the selected performers
        and tracker exist in it."""
        Table1Config.check_world(self, world)
        performers = getattr(self, "performers", None) or ()
        unknown = [p for p in performers if p not in world.performers]
        if unknown:
            raise ConfigError(f"performers: unknown {unknown}; the world has {list(world.performers)}")
        tracked_by = getattr(self, "tracked_by", None)
        if tracked_by is not None and tracked_by not in world.tracked:
            raise ConfigError(f"tracked_by={tracked_by!r} is not one of the data's trackers {list(world.tracked)}")
        take = getattr(self, "take", None)
        lacking = [p for p in self.selected(world) if take is not None and take not in world.sequences[p]]
        if lacking:
            raise ConfigError(f"take={take!r}: performer {lacking[0]} has no such take; it has "
                              f"{list(world.sequences[lacking[0]])}")

    def tracker_of(self, world) -> str:
        """The tracker whose outputs are the data: ``tracked_by``, or (null) the data's first
        (OS1 on the synthetic world; on a user's folder, the tracker that wrote it)."""
        return getattr(self, "tracked_by", None) or next(iter(world.tracked))

    def selected(self, world) -> list[str]:
        """The selected performers' names (all of the world's when ``performers`` is null)."""
        return list(getattr(self, "performers", None) or world.performers)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrateConfig(StageConfig):
    """conf/calibrate.yaml: calibrate ``performers`` (None: all) on their Simon-Says take as
    ``tracked_by`` saw it (None: the data's first tracker); calibration_frames: "mean" (each hold's mean) or "all" (every hold frame)."""

    STAGE = "calibrate"

    task_name: str = "calibrate"
    performers: Optional[tuple[str, ...]] = None
    tracked_by: Optional[str] = None
    calibration_frames: str = "mean"

    def __post_init__(self):
        super().__post_init__()
        if self.calibration_frames not in ("mean", "all"):
            raise ConfigError(f"calibration_frames must be 'mean' or 'all', got {self.calibration_frames!r}")

    @classmethod
    def _own(cls, d: dict) -> dict:
        if "performers" in d:
            d["performers"] = _performers(d["performers"], "performers")
        return d


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackConfig(CalibrateConfig):
    """conf/track.yaml: invert ``take`` of the selected performers with ``rig`` ("generic": the
    generic basis and rig; "calibrated": calibrated first as conf/calibrate.yaml; "finetuned":
    calibrated then fine-tuned, the finetune group's stages); max_frames: at most this many
    consecutive frames from the middle of the take (None: all)."""

    STAGE = "track"

    task_name: str = "track"
    take: str = "pangram"
    rig: str = "calibrated"
    max_frames: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        if self.take not in TAKES and not user_data(self):   # a user's takes are checked against the data
            raise ConfigError(f"take must be one of {TAKES}, got {self.take!r}")
        if self.rig not in RIGS:
            raise ConfigError(f"rig must be one of {RIGS}, got {self.rig!r}")
        if self.rig == "finetuned" and self.finetune is None:
            raise ConfigError("rig=finetuned needs the finetune group's stages, not finetune=none")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1 or null, got {self.max_frames}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneRigConfig(CalibrateConfig):
    """conf/finetune_rig.yaml: calibrate, then fine-tune the tracker's rig (the finetune group's
    stages) of the selected performers."""

    STAGE = "finetune"

    task_name: str = "finetune"

    def __post_init__(self):
        super().__post_init__()
        if self.finetune is None:
            raise ConfigError("finetune=none leaves nothing to fine-tune: choose finetune=short or finetune=default")


@dataclasses.dataclass(frozen=True)
class AvatarsConfig:
    """conf/retarget/*.yaml: n_avatars random FLAME identities (experiments/figures.py's
    random_avatars): the first n_coefficients shape coefficients ~ N(0, scale^2), seeded."""

    n_avatars: int = 2
    seed: int = 0
    n_coefficients: int = 10
    scale: float = 1.0

    def __post_init__(self):
        for name in ("n_avatars", "n_coefficients"):
            if getattr(self, name) < 1:
                raise ConfigError(f"retarget.{name} must be >= 1, got {getattr(self, name)}")
        if not self.scale >= 0:
            raise ConfigError(f"retarget.scale must be >= 0, got {self.scale}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetargetConfig(TrackConfig):
    """conf/retarget.yaml: track ``take`` as conf/track.yaml (default rig: calibrated), then drive
    the ``retarget`` group's avatars with the solved controls through the generic rig;
    write_obj: also write per-frame mesh files (mesh_format: "obj" or "ply"), of at most
    max_obj_frames frames per avatar."""

    STAGE = "retarget"
    MESH_FORMATS = ("obj", "ply")   # flamejax.io.meshes.FORMATS

    task_name: str = "retarget"
    retarget: AvatarsConfig = AvatarsConfig()
    write_obj: bool = False
    max_obj_frames: int = 10
    mesh_format: str = "obj"

    def __post_init__(self):
        super().__post_init__()
        if self.max_obj_frames < 1:
            raise ConfigError(f"max_obj_frames must be >= 1, got {self.max_obj_frames}")
        if self.mesh_format not in self.MESH_FORMATS:
            raise ConfigError(f"mesh_format must be one of {self.MESH_FORMATS}, got {self.mesh_format!r}")

    @classmethod
    def _own(cls, d: dict) -> dict:
        d = super()._own(d)
        if "retarget" in d:
            d["retarget"] = _build(AvatarsConfig, d["retarget"], "retarget")
        return d


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig(StageConfig):
    """conf/evaluate.yaml: :func:`flamejax.evaluate.evaluate_world` with the ``evaluation``
    selection (as Table 1's); finetune None: baseline and calibrated only."""

    STAGE = "evaluate"

    task_name: str = "evaluate"
    evaluation: EvaluationConfig = EvaluationConfig()

    def __post_init__(self):
        super().__post_init__()
        if not user_data(self):   # a user's takes are checked against the data (check_world)
            self.evaluation.check_synthetic_takes()

    @classmethod
    def _own(cls, d: dict) -> dict:
        if "evaluation" in d:
            d["evaluation"] = EvaluationConfig.from_dict(d["evaluation"])
        return d
