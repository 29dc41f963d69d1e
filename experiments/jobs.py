"""One job = one directory: what a finished, a failed and an unfinished job leave behind.

Every file a job writes is written atomically (:func:`write_atomic`), and ``run.json`` -- with
``"status": "done"`` or ``"failed"`` -- is written last. So a directory without a readable
``run.json`` is a job that was interrupted (or is still running): a re-run does it again; one whose
``run.json`` says done *for the same config* (``config.yaml`` text) is skipped
(:func:`finished`); a failed one records its error and traceback and is retried on a re-run.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

STATUS_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``: a reader
    (or a re-run sweep) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_status(job_dir: Path) -> Optional[dict]:
    """The job's ``run.json`` as a dict, or None when it is missing or unreadable (unfinished)."""
    try:
        status = json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def finished(job_dir: Path, config_text: str) -> bool:
    """True when ``job_dir`` holds a job that completed with exactly this resolved config."""
    status = read_status(job_dir)
    if status is None or status.get("status") != "done":
        return False
    try:
        return (Path(job_dir) / CONFIG_FILE).read_text() == config_text
    except OSError:
        return False


def write_done(job_dir: Path, info: Mapping[str, Any]) -> None:
    """Mark the job done (``run.json`` = info + status), after all its other files."""
    write_atomic(Path(job_dir) / STATUS_FILE, json.dumps({**info, "status": "done"}, indent=1, sort_keys=True))


def write_failed(job_dir: Path, error: BaseException, config_text: Optional[str] = None) -> None:
    """Record a failed job: ``run.json`` with status "failed", the error and its traceback (and the
    config it failed with, when known)."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        write_atomic(job_dir / CONFIG_FILE, config_text)
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    write_atomic(job_dir / STATUS_FILE, json.dumps(
        {"status": "failed", "error": f"{type(error).__name__}: {error}", "traceback": tb}, indent=1))


class NonFiniteResult(ArithmeticError):
    """A job's numbers are NaN or infinite (e.g. a weight that made a solver diverge)."""


def check_finite(records: Iterable[Mapping[str, Any]], allowed_nan: Iterable[str] = ("recognition",)) -> None:
    """Raise :class:`NonFiniteResult` naming the first record and metric that is not finite
    (``allowed_nan``: metrics that are NaN by definition on some takes)."""
    allowed = set(allowed_nan)
    for r in records:
        for key, value in r.items():
            if key in allowed or isinstance(value, (bool, str)) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                where = ", ".join(f"{k}={r[k]}" for k in ("performer", "tracker", "take", "variant") if k in r)
                raise NonFiniteResult(f"{key} is {value} ({where})")
