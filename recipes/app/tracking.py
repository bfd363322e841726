"""Tracking a run in MLflow (``--mlflow [URI]``, ``fit(mlflow=URI)``): a record sink and the MLflow run's start and end.

:meth:`MlflowSink.start` opens the MLflow run (a resumed run reopens the one named in ``RUN_DIR/mlflow.json``)
and logs the resolved options as its params; the sink then logs each record's numbers as metrics, the
epoch as the step of the training and validation ones, the iteration as that of the batch ones;
:meth:`MlflowSink.close` logs ``config.json`` and the best checkpoint as artifacts and ends the MLflow
run as the summary record says. It uses the MLflow client, whose run id is explicit: no active-run
state in the process. An MLflow that cannot be reached costs one warning: the run goes on, every
record is in ``metrics.jsonl``. MLflow is imported only here, only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flint.handlers import write_text_atomic
from flint.recipes.app.config import Config
from flint.recipes.app.rundir import RunDir

__all__ = ["MlflowSink", "ENDINGS", "metric_points"]

logger = logging.getLogger(__name__)

BestCheckpoint = Callable[[], "str | os.PathLike[str] | None"]  # the best checkpoint's path when the run ends, or None
ENDINGS = {"completed": "FINISHED", "interrupted": "KILLED"}
"""The MLflow status a run ends with, by its summary's status; any other (failed, aborted, none) is FAILED."""

_LAUNCH = ("resume", "mlflow")  # where a launch starts and what tracks it: not params of the run
_UNTRACKED = ("lr", "resume")  # the per-step LR is on the training records; a resume is not a measurement
_POSITION = ("phase", "epoch", "iteration", "samples")
# MLflow retries an unreachable server for minutes by default; unless the user set these, a few seconds.
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def metric_points(record: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` for each number of ``record``: key ``<phase>/<field>`` (a list: ``<phase>/<field>/<i>``,
    one per param group), step the record's epoch, else its iteration, else 0 (a batch record's is its iteration).

    Example:
        >>> metric_points({"phase": "training", "epoch": 2, "iteration": 46, "loss": 0.25, "lr": [0.1, 0.01]})
        [('training/loss', 0.25, 2), ('training/lr/0', 0.1, 2), ('training/lr/1', 0.01, 2)]
        >>> metric_points({"phase": "batch", "epoch": 1, "iteration": 50, "loss": 0.5, "samples_per_sec": 900.0})
        [('batch/loss', 0.5, 50), ('batch/samples_per_sec', 900.0, 50)]
    """
    phase = record.get("phase")
    if phase in _UNTRACKED:
        return []
    step = record.get("iteration") if phase == "batch" else record.get("epoch", record.get("iteration"))
    step = step if isinstance(step, int) and not isinstance(step, bool) else 0
    points = []
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        if key in _POSITION or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        names = [f"{phase}/{key}"] if not isinstance(value, list) else [f"{phase}/{key}/{i}" for i in range(len(value))]
        points += [(name, float(v), step) for name, v in zip(names, values)]
    return points


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP retries bounded to seconds for the block, where the user has not set them, and urllib3's line
    per retry kept off the terminal (the one warning says it)."""
    unset = [name for name in _QUICK_HTTP if name not in os.environ]
    os.environ.update({name: _QUICK_HTTP[name] for name in unset})
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)
        for name in unset:
            os.environ.pop(name, None)


def _route_mlflow_logging() -> None:
    """MLflow gives its loggers a stderr handler of their own; they go through the root logger instead (``train.log``;
    the console shows their warnings), as Ignite's do."""
    for name in ("mlflow", "alembic", "sqlalchemy.engine"):
        log = logging.getLogger(name)
        log.handlers = []
        log.propagate = True


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class MlflowSink:
    """A record sink that logs a run's records to an MLflow run, and ends that run when the sink is closed.

    Build it with :meth:`start`. Each record's numbers become metrics (:func:`metric_points`); the
    summary record's status decides how the MLflow run ends (:data:`ENDINGS`); :meth:`close` logs the
    run's ``config.json`` and its best checkpoint (under ``checkpoints/``) as artifacts, then ends it.
    The first call MLflow fails logs one warning and turns the sink off.

    Args:
        client: an ``mlflow.MlflowClient``.
        run_id: the MLflow run.
        run: the run's directory.
        best_checkpoint: returns the best checkpoint's path (or None) when the run ends. Default: none logged.
    """

    def __init__(self, client: Any, run_id: str, run: RunDir, best_checkpoint: BestCheckpoint | None = None) -> None:
        self.client: Any = client
        self.run_id, self.run, self.best_checkpoint = run_id, run, best_checkpoint
        self._ending = "FAILED"  # until a summary record says otherwise

    @classmethod
    def start(cls, cfg: Config, run: RunDir, resuming: bool,
              best_checkpoint: BestCheckpoint | None = None) -> MlflowSink | None:  # fmt: skip
        """Open ``cfg``'s MLflow run (a resumed run's own, if ``RUN_DIR/mlflow.json`` names one in the same store)
        and log its options as params; None, with one warning, if MLflow cannot be reached.

        ``cfg.mlflow`` is the tracking URI; ``""`` is MLflow's default (``MLFLOW_TRACKING_URI``, else
        ``mlflow.db`` in the current directory; a resumed run keeps the store it started in). The
        experiment is ``MLFLOW_EXPERIMENT_NAME``'s (made if missing), else MLflow's default one."""
        import mlflow

        _route_mlflow_logging()
        saved = _saved(run) if resuming else {}
        uri = cfg.mlflow or saved.get("tracking_uri") or mlflow.get_tracking_uri()
        try:
            with _quick_http():
                client = mlflow.MlflowClient(tracking_uri=uri)
                reopened = _reopen(client, saved) if saved.get("tracking_uri") == uri else None
                run_id = reopened or _create(client, cfg, run)
                _log_params(client, run_id, asdict(cfg))
        except Exception as e:
            logger.warning("MLflow at %s cannot be reached (%s); the run is not tracked there, every record is in %s",
                           uri, _first_line(e), run.metrics_file)  # fmt: skip
            return None
        if reopened is None:  # the run directory's own file: a full disk is the run's error
            write_text_atomic(run.mlflow_file, json.dumps({"tracking_uri": uri, "run_id": run_id}) + "\n", "MLflow run file")
        logger.info("Tracked in MLflow at %s: run %s", uri, run_id)
        return cls(client, run_id, run, best_checkpoint)

    def __call__(self, record: Mapping[str, Any]) -> None:
        if record.get("phase") == "summary":
            self._ending = ENDINGS.get(str(record.get("status")), "FAILED")
        now = int(time.time() * 1000)
        points = [(key, value, step) for key, value, step in metric_points(record) if math.isfinite(value)]  # metrics.jsonl: null
        if points and self.client is not None:
            from mlflow.entities import Metric

            self._call("log_batch", self.run_id, metrics=[Metric(key, value, now, step) for key, value, step in points])

    def close(self) -> None:
        """Log ``config.json`` and the best checkpoint as artifacts, then end the MLflow run as the summary said."""
        if self.client is None:
            return
        best = self.best_checkpoint() if self.best_checkpoint is not None else None
        if self.run.config_file.is_file():
            self._call("log_artifact", self.run_id, str(self.run.config_file))
        if best is not None and Path(best).is_file():
            self._call("log_artifact", self.run_id, str(best), "checkpoints")
        self._call("set_terminated", self.run_id, self._ending)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        """``client.method(...)``; the first failure turns the sink off with one warning."""
        if self.client is None:
            return
        try:
            with _quick_http():
                getattr(self.client, method)(*args, **kwargs)
        except Exception as e:  # the store went away: training goes on
            self.client = None
            logger.warning("MLflow tracking stopped: %s; the run goes on, every record is in %s", _first_line(e), self.run.metrics_file)


def _saved(run: RunDir) -> dict[str, Any]:
    """What ``mlflow.json`` says (``tracking_uri``, ``run_id``); {} if there is none or it does not read."""
    try:
        saved = json.loads(run.mlflow_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _reopen(client: Any, saved: Mapping[str, Any]) -> str | None:
    """The saved MLflow run, marked running again; None if the store does not have it."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(saved["run_id"])
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        logger.warning("MLflow run %s is not in %s: starting a new one", saved.get("run_id"), saved.get("tracking_uri"))
        return None
    client.update_run(saved["run_id"], status="RUNNING")
    return str(saved["run_id"])


def _create(client: Any, cfg: Config, run: RunDir) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    experiment = "0"  # MLflow's default experiment
    if name:
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else client.create_experiment(name)
    tags = {"flint.run_dir": str(run.path.resolve()), "flint.recipe": cfg.recipe}
    return str(client.create_run(experiment, run_name=run.path.resolve().name, tags=tags).info.run_id)


def _log_params(client: Any, run_id: str, options: Mapping[str, Any]) -> None:
    """The options as params (not where a launch starts or what tracks it); a resumed run's changed ones (MLflow
    keeps a param's first value) as the tag ``flint.resumed_with``."""
    from mlflow.entities import Param, RunTag

    logged = client.get_run(run_id).data.params
    values = {key: _param(value) for key, value in options.items() if key not in _LAUNCH}
    new = [Param(key, value) for key, value in values.items() if key not in logged]
    changed = [f"{key}={value}" for key, value in values.items() if key in logged and logged[key] != value]
    tags = [RunTag("flint.resumed_with", ", ".join(changed))] if changed else []
    client.log_batch(run_id, params=new, tags=tags)


def _first_line(error: BaseException) -> str:
    """The reason in a few words: the OS's (``[Errno 111] Connection refused``) if MLflow's long message holds one."""
    text = str(error).strip()
    reason = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    return reason.group(0) if reason else text.splitlines()[0][:200] if text else type(error).__name__
