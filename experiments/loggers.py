"""Experiment loggers: where a job's config, metrics, loss histories, tables and media go besides
its job directory. conf/logger/*.yaml picks one (``LoggerConfig.kind``):

- ``none``: :class:`NullLogger`, every call does nothing (the job directory holds the results);
- ``wandb``: :class:`WandbLogger`, one Weights & Biases run per job, offline by default (written
  under the job directory, uploaded later with ``wandb sync``), online after ``wandb login``.

    with make_logger(cfg.logger, out_dir, config_dict, job_name="table1") as log:
        log.log_history("calibration/alice/OS1/objective", objective_values)
        log.log_metrics(metrics)
        log.log_table("table1", columns, rows)
        log.summary(metrics)
    # leaving the block finishes the run; an exception marks it failed

wandb is imported only inside :class:`WandbLogger` (it takes most of a second to import and
starts a background service), so ``logger=none`` jobs never load it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

if TYPE_CHECKING:  # the configs module imports JAX and the library; only its type is needed here
    from experiments.configs import LoggerConfig


class LoggerError(RuntimeError):
    """The experiment logger could not start (e.g. W&B online without credentials)."""


def _missing(value: Any) -> bool:
    """None or a NaN: a metric with no value (e.g. the std over one performer), skipped rather
    than logged, since W&B would chart it as a gap or store it as non-standard JSON."""
    if value is None:
        return True
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy / JAX scalars
        value = value.item()
    return isinstance(value, float) and math.isnan(value)


def _number(value: Any):
    """A plain Python number from a NumPy/JAX scalar or a Python one (bools and ints stay exact)."""
    if isinstance(value, (bool, int)):
        return value
    if hasattr(value, "item"):  # NumPy / JAX 0-d arrays and scalars
        value = value.item()
    return value if isinstance(value, (bool, int)) else float(value)


def _cell(value: Any):
    """A table cell: NaN -> None (W&B writes tables as JSON, where NaN is not valid), NumPy
    scalars -> Python values, anything else unchanged."""
    if _missing(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class Logger:
    """The interface every job talks to; this base class does nothing (see :class:`NullLogger`).

    A logger is a context manager: leaving the ``with`` block finishes it, with exit code 1 when
    an exception left it (so a crashed job's run is recorded as failed, not as finished)."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add (or update) the run's config; :func:`make_logger` already records the job's."""

    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """Log scalar metrics (``{name: float or None}``; None and NaN values are skipped). step:
        None logs them once (e.g. a job's final numbers); an int places them at that x of the
        ``step`` axis, which is independent of every other call's, so any order of calls works."""

    def log_history(self, name: str, values: Sequence[Any], step_name: str = "iteration") -> None:
        """Log a per-iteration series (e.g. the calibration objective, a fine-tuning stage's
        values): value i is the point at x = i of its own axis ``<name>/<step_name>``."""

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a table (one row per sequence in ``rows``, cells in the order of ``columns``)."""

    def log_image(self, name: str, path) -> None:
        """Log an image file (PNG, JPEG)."""

    def log_video(self, name: str, path) -> None:
        """Log a video file (MP4; also GIF, WebM, OGG)."""

    def summary(self, mapping: Mapping[str, Any]) -> None:
        """Set the run's summary values (its one-number-per-key results; None/NaN skipped)."""

    def finish(self, exit_code: int = 0) -> None:
        """End the run (idempotent); a non-zero exit_code marks it failed."""

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            code = 0
        elif isinstance(exc, SystemExit):  # sys.exit(0) is a success, sys.exit("msg") is not
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = 1
        self.finish(exit_code=code)
        return False  # never swallow the exception


class NullLogger(Logger):
    """``logger=none``: logs nothing."""


class WandbLogger(Logger):
    """One W&B run. ``cfg`` (LoggerConfig) names the project, entity, mode, group, name, tags and
    directory (None: ``run_dir``, the job directory, so the run sits next to the job's files);
    ``config`` is recorded as the run's config; the run's name defaults to ``job_name``.

    Attributes: ``run`` (the wandb Run), ``mode``, ``run_path`` (the folder W&B writes, e.g.
    ``<dir>/wandb/offline-run-<time>-<id>``: ``wandb sync`` takes it), ``url`` (online only).

    :meth:`finish` returns once W&B's service has the run's last record; the service writes the
    ``.wandb`` file in the background and completes it shortly after (at the latest when the
    process exits), so a reader in the same process waits for its exit record."""

    #: the x axis of :meth:`log_metrics` calls that pass ``step``
    STEP = "step"

    def __init__(self, cfg: "LoggerConfig", run_dir, config: Mapping[str, Any], *, job_name: str):
        import wandb  # here, not at the top: logger=none must not load wandb (module doc)

        self._wandb = wandb
        self.mode = cfg.mode
        root = Path(cfg.dir) if cfg.dir else Path(run_dir)
        root.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            # wandb's own banners ("syncing is set to offline", run URLs, the exit summary) would
            # interleave with the job's progress lines; failures still raise
            silent=True,
            # a job's run is held by this object, never by the global wandb.run: each init makes
            # a new run without finishing or touching any other (a Hydra multirun starts its jobs
            # in one process; a notebook may hold its own run)
            reinit="create_new",
        )
        try:
            self.run = wandb.init(project=cfg.project, entity=cfg.entity, dir=str(root), mode=cfg.mode,
                                  group=cfg.group, name=cfg.name or job_name, tags=list(cfg.tags) or None,
                                  config=dict(config), settings=settings)
        except Exception as e:  # wandb raises UsageError, CommError, AuthenticationError, timeouts...
            hint = ("log in first (`wandb login`, or set WANDB_API_KEY) or use logger.mode=offline and "
                    "`wandb sync` the run later" if cfg.mode == "online" else
                    "check that the directory is writable and that WANDB_* environment variables are "
                    "valid, or use logger=none")
            raise LoggerError(f"W&B failed to start a run in mode={cfg.mode!r} (dir {root}): "
                              f"{type(e).__name__}: {e}. To fix: {hint}.") from e
        # the folder holding the .wandb record file and files/ (None for mode=disabled)
        sync_dir = getattr(self.run.settings, "sync_dir", None)
        self.run_path = Path(sync_dir) if sync_dir and cfg.mode != "disabled" else None
        # reading run.url offline only prints a warning
        self.url = self.run.url if cfg.mode == "online" else None
        self._defined: set[str] = set()
        self._finished = False

    def _define(self, name: str, **kwargs) -> None:
        """run.define_metric once per name (a re-definition would be a new record each call)."""
        if name not in self._defined:
            self.run.define_metric(name, **kwargs)
            self._defined.add(name)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        values = {k: _number(v) for k, v in metrics.items() if not _missing(v)}
        if not values:
            return
        if step is not None:
            # W&B's own step only grows and silently drops a row whose step is lower than the
            # last (log_history/log_table advance it), so a caller's step is a custom axis
            self._define(self.STEP, hidden=True)
            for k in values:
                self._define(k, step_metric=self.STEP)
            values[self.STEP] = int(step)
        self.run.log(values)

    def log_history(self, name: str, values: Sequence[Any], step_name: str = "iteration") -> None:
        axis = f"{name}/{step_name}"
        # the axis itself is no chart of interest; its own name keeps several series (per
        # performer, per stage) from sharing, and so fighting over, one counter
        self._define(axis, hidden=True)
        self._define(name, step_metric=axis)
        for i, v in enumerate(values):
            if not _missing(v):
                self.run.log({name: _number(v), axis: i})

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        columns = [str(c) for c in columns]
        data = [[_cell(v) for v in row] for row in rows]
        bad = [i for i, row in enumerate(data) if len(row) != len(columns)]
        if bad:
            raise ValueError(f"table {name!r}: row {bad[0]} has {len(data[bad[0]])} cells for {len(columns)} columns")
        # mixed types: a column may hold None (a metric undefined for one performer) or both
        # numbers and text; W&B would otherwise reject a row whose cell type differs from row 0
        self.run.log({name: self._wandb.Table(columns=columns, data=data, allow_mixed_types=True)})

    def log_image(self, name: str, path) -> None:
        self.run.log({name: self._wandb.Image(str(path))})

    def log_video(self, name: str, path) -> None:
        path = Path(path)
        # from a file W&B copies the bytes as they are (no re-encoding, so no moviepy); the
        # format comes from the suffix
        self.run.log({name: self._wandb.Video(str(path), format=path.suffix.lstrip(".").lower() or "mp4")})

    def summary(self, mapping: Mapping[str, Any]) -> None:
        self.run.summary.update({k: _cell(v) for k, v in mapping.items() if not _missing(v)})

    def finish(self, exit_code: int = 0) -> None:
        if not self._finished:
            self._finished = True
            self.run.finish(exit_code=int(exit_code))


def make_logger(cfg: "LoggerConfig", run_dir, config: Mapping[str, Any], *, job_name: str) -> Logger:
    """The logger ``cfg.kind`` names, its run started with ``config`` (the job's resolved config)
    recorded. run_dir: the job directory (W&B's default ``dir``); job_name: the run's default
    name. Raises :class:`LoggerError` when W&B cannot start."""
    if cfg.kind == "none":
        return NullLogger()
    if cfg.kind == "wandb":
        return WandbLogger(cfg, run_dir, config, job_name=job_name)
    raise ValueError(f"logger.kind must be 'none' or 'wandb', got {cfg.kind!r}")
