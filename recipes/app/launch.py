"""Launching a run: in this process, on ``--nproc-per-node`` spawned workers, or as one worker of torchrun.

``flint run`` and :func:`flint.recipes.fit` both call :func:`launch`. A spawned worker reports a
:class:`WorkerResult` (its summary, or the class and message of the exception it stopped on) in a
file of the launch's own, which the launching process turns back into the same outcome: no text is
parsed, and no semaphore outlives the workers.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from flint.recipes.app.config import Config, UsageError
from flint.recipes.app.registry import BUILTIN
from flint.recipes.app.rundir import RunDir
from flint.recipes.app.stopping import STOPS, StopSignal

__all__ = ["launch", "under_torchrun", "exit_finished_worker", "WorkerResult", "Console"]

logger = logging.getLogger(__name__)

Console = Callable[[int], None]  # sets up the terminal's logging for a rank (the CLI's), or None


@dataclass(frozen=True)
class WorkerResult:
    """What a spawned worker reports to the launching process: its summary record, or the error it stopped on."""

    rank: int
    summary: dict[str, Any] = field(default_factory=dict)  # the run's summary record (rank 0), empty if it failed
    error: str | None = None  # the exception's class name
    message: str = ""
    signum: int | None = None  # a StopSignal's
    handler_states: dict[str, Any] = field(default_factory=dict)  # rank 0: the trained state of fit()'s handlers, by index

    @classmethod
    def of_error(cls, rank: int, error: BaseException) -> WorkerResult:
        message = str(error).splitlines()[0] if str(error) else ""
        return cls(rank, error=type(error).__name__, message=message, signum=getattr(error, "signum", None))

    def raise_error(self) -> None:
        """Raise what the worker raised: Flint's own exceptions as themselves, any other as RuntimeError."""
        from flint.handlers import CheckpointError, NonFiniteLoss

        kinds: dict[str, Callable[[str], BaseException]] = {
            "UsageError": UsageError, "KeyboardInterrupt": KeyboardInterrupt, "NonFiniteLoss": NonFiniteLoss,
            "CheckpointError": CheckpointError, "StopSignal": lambda _: StopSignal(self.signum or signal.SIGTERM),
        }  # fmt: skip
        error = kinds.get(self.error or "", RuntimeError)(self.message or str(self.error))
        if self.signum is not None:
            error.signum = self.signum  # type: ignore[attr-defined]  # the exit status is 128 + it
        raise error


def launch(cfg: Config, recipe: Any, handlers: Sequence[Any] = (), loss_fn: Any = None, optimizer: Any = None,
           console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``cfg`` where it asks to run; the summary record (see :func:`flint.recipes.app.train.train`).

    ``recipe`` is a :class:`flint.recipes.Recipe`; spawned workers get it as it is if it is a built-in or
    ``fit()``'s, else load it again by ``cfg.recipe`` (a recipe file's objects may not pickle).
    ``console(rank)`` sets up each worker's logging. With spawned workers, the summary's
    ``"handler_states"`` holds the trained state of each of ``handlers`` that keeps one (by index).
    """
    from flint.recipes.app.train import check_with_torch, train

    check_with_torch(cfg, recipe)
    if under_torchrun():
        return _under_torchrun(cfg, recipe, handlers, loss_fn, optimizer, console)
    if cfg.nproc_per_node > 1:
        shipped = recipe if cfg.recipe in BUILTIN or cfg.style == "python" else cfg.recipe
        return _spawn(cfg, recipe, shipped, tuple(handlers), loss_fn, optimizer, console)
    return train(cfg, recipe, handlers, loss_fn, optimizer)


def under_torchrun() -> bool:
    """Whether this process is one worker of several launched by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_finished_worker(code: int) -> NoReturn:
    """End a data-parallel worker process whose run is over, skipping the interpreter's and torch's teardown.

    Called once every rank has passed the last barrier: results are written and reported, files
    closed. torch's teardown of a finished gloo worker aborts now and then (SIGABRT, "terminate called
    without an active exception"), and the launcher or torchrun then reported a completed run as
    failed. Only the logs and standard streams are left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend(cfg: Config) -> str:
    from flint.recipes.app.train import resolve_device

    return "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo"


def _report(results: Path, result: WorkerResult) -> None:
    """Write a worker's result where the launcher reads it: one file per rank, renamed into place whole."""
    from flint.handlers.files import write_atomic

    write_atomic(results / f"{result.rank}.result", lambda tmp: tmp.write_bytes(pickle.dumps(result)), "worker result")


def _worker(local_rank: int, cfg: Config, recipe: Any, extras: tuple[Sequence[Any], Any, Any], console: Console | None,
            results: str) -> None:  # fmt: skip
    """One spawned data-parallel worker: the run's training job on its rank, reported as a WorkerResult."""
    import ignite.distributed as idist
    import torch

    from flint.recipes.app.registry import load_recipe
    from flint.recipes.app.train import train

    STOPS.install()  # a signal before training ends this worker with StopSignal, reported
    rank = idist.get_rank()
    if console is not None:
        console(rank)
    if _backend(cfg) == "gloo":  # share the cores: oversubscribed OpenMP threads spin and crawl
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))
    handlers = extras[0]
    try:
        summary = train(cfg, load_recipe(recipe) if isinstance(recipe, str) else recipe, *extras, lock=False)  # the launcher holds the lock
    except BaseException as e:  # reported, then a non-zero exit: the launcher stops the other workers
        _report(Path(results), WorkerResult.of_error(rank, e))
        sys.exit(2 if isinstance(e, UsageError) else 1)
    if rank == 0:
        states = {str(i): h.state_dict() for i, h in enumerate(handlers) if callable(getattr(h, "state_dict", None))}
        _report(Path(results), WorkerResult(rank, summary, handler_states=states))
    idist.barrier()  # every rank past its last collective: nothing is left in flight
    exit_finished_worker(0)


def _spawn(cfg: Config, recipe: Any, shipped: Any, handlers: tuple[Any, ...], loss_fn: Any, optimizer: Any,
           console: Console | None) -> dict[str, Any]:  # fmt: skip
    """Run ``cfg`` on ``cfg.nproc_per_node`` local workers through ``idist.Parallel``; rank 0's summary.

    ``shipped`` is the recipe as the workers get it. This process holds the directory: the recipe's own
    code is checked here, once, before anything is written, and so are the run's options."""
    import ignite.distributed as idist

    from flint.recipes.app.resume import claim_run_dir, last_summary
    from flint.recipes.app.train import prepare

    _check_spawnable(cfg, {"metrics": recipe.metrics, "prepare_batch": recipe.prepare_batch, "the model and data": shipped, "loss": loss_fn,
                           "optimizer": optimizer,
                           **{f"handlers[{i}]": h for i, h in enumerate(handlers)}})  # fmt: skip
    launch_error: Exception | None = None
    with claim_run_dir(cfg, lambda: prepare(cfg, recipe)) as (_, _, done), tempfile.TemporaryDirectory(prefix="flint-workers-") as results:
        if done is not None:  # the launcher holds the directory; bad usage is found here, once, not by every worker
            return last_summary(RunDir(cfg.output_dir), done)
        try:
            with STOPS.forwarding(), idist.Parallel(_backend(cfg), nproc_per_node=cfg.nproc_per_node, master_port=_free_port()) as parallel:
                parallel.run(_worker, cfg, shipped, (handlers, loss_fn, optimizer), console, results)
        except Exception as e:  # a worker exited non-zero: its own report says why
            launch_error = e
        reports = [pickle.loads(p.read_bytes()) for p in sorted(Path(results).glob("*.result"))]
    STOPS.settle()
    return _outcome(reports, launch_error, cfg)


def _outcome(reports: list[WorkerResult], launch_error: Exception | None, cfg: Config) -> dict[str, Any]:
    """Rank 0's summary, or the error that stopped the workers: a killed worker first, then the first reported."""
    killed = getattr(launch_error, "signal_name", None)
    if killed:  # torch.multiprocessing.ProcessExitedException: a worker died of a signal, reporting nothing
        index = getattr(launch_error, "error_index", "?")
        raise RuntimeError(f"worker {index} was killed by signal {killed}; the others stopped; see {RunDir(cfg.output_dir).log_file}")
    failed = sorted((r for r in reports if r.error), key=lambda r: (r.error == "StopSignal", r.rank))
    if failed:
        failed[0].raise_error()
    done = [r for r in reports if r.rank == 0]
    if not done:
        reason = str(launch_error).strip().splitlines()[0] if launch_error else "no result"
        raise RuntimeError(f"a worker ended without reporting a result ({reason}); see {RunDir(cfg.output_dir).log_file}")
    return {**done[0].summary, "handler_states": done[0].handler_states}


def _check_spawnable(cfg: Config, parts: dict[str, Any]) -> None:
    """Before anything is written: what spawned workers need of the caller (``fit()`` with ``nproc_per_node > 1``).

    Each worker is a new Python process that imports the caller's script again and receives the
    run's parts pickled: the call must be under ``if __name__ == "__main__":`` and every part must pickle."""
    for name, part in parts.items():
        try:
            pickle.Pickler(_Discard()).dump(part)
        except Exception as e:
            raise UsageError(f"nproc_per_node={cfg.nproc_per_node} sends {name} to worker processes, which needs pickling: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (a lambda or a local function cannot be; "
                             "use a module-level function)") from None  # fmt: skip
    script = _unguarded_main_call()
    if script is not None:
        raise UsageError(f"nproc_per_node={cfg.nproc_per_node} starts worker processes that import {script} again, running this "
                         'call in each: put it under if __name__ == "__main__":')  # fmt: skip


class _Discard:
    """A file that keeps nothing: pickling into it checks that an object pickles, without holding a copy."""

    def write(self, data: bytes) -> int:
        return len(data)


def _unguarded_main_call() -> str | None:
    """The main script's path if this call comes from its top level outside ``if __name__ == "__main__":``, else None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        return None  # an interactive session, python -c, or python -m: nothing is re-run by the workers
    frame = inspect.currentframe()
    line = None  # the main script's top-level line on the call stack
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    if line is None:
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return None
    return path


def _check_restartable() -> None:
    """Refuse ``torchrun --max-restarts`` with the store torchrun shares across restarts.

    torchrun's TCPStore (``TORCHELASTIC_USE_AGENT_STORE``) keeps the previous workers' process-group
    keys, so restarted workers may read dead peers' addresses: they hang in, or fail, the process
    group's creation (pytorch/pytorch#135712). With ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` a c10d
    rendezvous gives each attempt a fresh store.
    """
    restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")
    if restarts != "0" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise UsageError(
            f"torchrun --max-restarts {restarts}: restarted workers would find the previous ones' addresses in "
            "torchrun's shared store and hang; run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 and --standalone "
            "or --rdzv-backend c10d"
        )


def _under_torchrun(cfg: Config, recipe: Any, handlers: Sequence[Any], loss_fn: Any, optimizer: Any,
                    console: Console | None) -> dict[str, Any]:  # fmt: skip
    """One worker of a torchrun launch: the process group comes from torchrun's environment."""
    import ignite.distributed as idist

    from flint.recipes.app.train import train

    _check_restartable()
    if console is not None:
        from flint.recipes.app.console import route_ignite_logging

        route_ignite_logging()  # before idist.Parallel makes its logger, with a stderr handler of its own
    summaries: list[dict[str, Any]] = []

    def job(local_rank: int) -> None:
        summaries.append(train(cfg, recipe, handlers, loss_fn, optimizer))  # rank 0 holds the lock
        idist.barrier()  # as _worker: every rank past its last collective before the group is destroyed

    with idist.Parallel(_backend(cfg)) as parallel:
        if console is not None:
            console(idist.get_rank())
        parallel.run(job)
    return summaries[0]
