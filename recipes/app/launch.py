"""Launching a run: in this process, on ``--nproc-per-node`` spawned workers, or as one worker of torchrun.

``flint run`` and :func:`flint.recipes.app.fit` both call :func:`launch`. A spawned worker reports a
:class:`WorkerResult` (its summary, or the class and message of the exception it stopped on), which
the launching process turns back into the same outcome: no text is parsed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from flint.recipes.app.config import Config, StopSignal, UsageError
from flint.recipes.app.registry import BUILTIN

__all__ = ["launch", "under_torchrun", "exit_finished_worker", "WorkerResult", "Console"]

Console = Callable[[int], None]  # sets up the terminal's logging for a rank (the CLI's), or None


@dataclass(frozen=True)
class WorkerResult:
    """What a spawned worker reports to the launching process: its summary record, or the error it stopped on."""

    rank: int
    summary: dict[str, Any] = field(default_factory=dict)  # the run's summary record (rank 0), empty if it failed
    error: str | None = None  # the exception's class name
    message: str = ""
    signum: int | None = None  # a StopSignal's

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
           console: Console | None = None, on_settled: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``cfg`` where it asks to run; the summary record (see :func:`flint.recipes.app.train.train`).

    ``recipe`` is a :class:`flint.recipes.Recipe`; spawned workers get it as it is if it is a built-in or
    ``fit()``'s, else load it again by ``cfg.recipe`` (a recipe file's objects may not pickle).
    ``console(rank)`` sets up each worker's logging; ``on_settled()`` is called once the run's
    outcome is decided (the CLI then ignores stop signals).
    """
    from flint.recipes.app.train import check_with_torch, train

    check_with_torch(cfg, recipe)
    if under_torchrun():
        return _under_torchrun(cfg, recipe, handlers, loss_fn, optimizer, console, on_settled)
    if cfg.nproc_per_node > 1:
        shipped = recipe if cfg.recipe in BUILTIN or cfg.recipe.startswith("fit:") else cfg.recipe
        summary = _spawn(cfg, shipped, handlers, loss_fn, optimizer, console)
        if on_settled is not None:
            on_settled()
        return summary
    return train(cfg, recipe, handlers, loss_fn, optimizer, on_settled=on_settled)


def under_torchrun() -> bool:
    """Whether this process is one worker of several launched by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_finished_worker(code: int) -> NoReturn:
    """End a data-parallel worker process whose run is over, skipping the interpreter's and torch's teardown.

    Called once every rank has passed the last barrier: results are written and reported, files
    closed. torch's teardown of a finished gloo worker aborted now and then (rank 1, SIGABRT,
    "terminate called without an active exception": 2 failed tests in one full suite run, 1 run in
    10 of a loop of the two, none in 100 runs on another day); the launcher or torchrun then reported a
    completed run as failed. Only the logs and standard streams are left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _recipe(recipe: Any) -> Any:
    if isinstance(recipe, str):
        from flint.recipes.app.registry import load_recipe

        return load_recipe(recipe)
    return recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend(cfg: Config) -> str:
    from flint.recipes.app.train import resolve_device

    return "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo"


def _worker(
    local_rank: int, cfg: Config, recipe: Any, extras: tuple[Sequence[Any], Any, Any], console: Console | None, results: Any
) -> None:
    """One spawned data-parallel worker: the run's training job on its rank, reported as a WorkerResult."""
    import ignite.distributed as idist
    import torch

    from flint.recipes.app.train import train

    def stop_before_training(signum: int, frame: object) -> None:  # until the run's own handlers take over
        raise StopSignal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop_before_training)
    rank = idist.get_rank()
    if console is not None:
        console(rank)
    if _backend(cfg) == "gloo":  # share the cores: oversubscribed OpenMP threads spin and crawl
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))
    try:
        summary = train(cfg, _recipe(recipe), *extras, lock=False)  # the launching process holds the lock
    except BaseException as e:  # reported, then a non-zero exit: the launcher stops the other workers
        results.put(WorkerResult.of_error(rank, e))
        sys.exit(2 if isinstance(e, UsageError) else 1)
    if rank == 0:
        results.put(WorkerResult(rank, summary))
    idist.barrier()  # every rank past its last collective: nothing is left in flight
    exit_finished_worker(0)


def _spawn(cfg: Config, recipe: Any, handlers: Sequence[Any], loss_fn: Any, optimizer: Any,
           console: Console | None) -> dict[str, Any]:  # fmt: skip
    """Run ``cfg`` on ``cfg.nproc_per_node`` local workers through ``idist.Parallel``; rank 0's summary."""
    import multiprocessing

    import ignite.distributed as idist
    import torch.multiprocessing as mp

    from flint.recipes.app.resume import claim_run_dir, last_summary

    results = mp.get_context("spawn").SimpleQueue()

    def forward(signum: int, frame: object) -> None:  # schedulers may signal only this process
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)  # type: ignore[arg-type]
            except ProcessLookupError:  # it has just exited
                pass

    launch_error: Exception | None = None
    with claim_run_dir(cfg) as (_, done):  # held by this process; bad usage is found here, once, not by every worker
        if done is not None:
            return last_summary(Path(cfg.output_dir), done)
        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            with idist.Parallel(_backend(cfg), nproc_per_node=cfg.nproc_per_node, master_port=_free_port()) as parallel:
                parallel.run(_worker, cfg, recipe, (tuple(handlers), loss_fn, optimizer), console, results)
        except Exception as e:  # a worker exited non-zero: its own report says why
            launch_error = e
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    reports = []
    while not results.empty():
        reports.append(results.get())
    failed = sorted((r for r in reports if r.error), key=lambda r: (r.error == "StopSignal", r.rank))
    if failed:
        failed[0].raise_error()
    if launch_error is not None or not reports:
        reason = str(launch_error).strip().splitlines()[0] if launch_error else "no result"
        raise RuntimeError(f"a worker ended without reporting a result ({reason}); see train.log")
    return reports[0].summary


def _check_restartable() -> None:
    """Refuse ``torchrun --max-restarts`` with the store torchrun shares across restarts.

    torchrun's TCPStore (``TORCHELASTIC_USE_AGENT_STORE``) keeps the previous workers' process-group
    keys, so restarted workers may read dead peers' addresses: they hang in, or fail, the process
    group's creation (measured with torch 2.14; pytorch/pytorch#135712). With
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` a c10d rendezvous gives each attempt a fresh store.
    """
    restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")
    if restarts != "0" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise UsageError(
            f"torchrun --max-restarts {restarts}: restarted workers would find the previous ones' addresses in "
            "torchrun's shared store and hang; run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 and --standalone "
            "or --rdzv-backend c10d"
        )


def _under_torchrun(cfg: Config, recipe: Any, handlers: Sequence[Any], loss_fn: Any, optimizer: Any,
                    console: Console | None, on_settled: Callable[[], None] | None) -> dict[str, Any]:  # fmt: skip
    """One worker of a torchrun launch: the process group comes from torchrun's environment."""
    import ignite.distributed as idist

    from flint.recipes.app.train import train

    _check_restartable()
    if console is not None:
        from flint.recipes.app.console import route_ignite_logging

        route_ignite_logging()  # before idist.Parallel makes its logger, with a stderr handler of its own
    summaries: list[dict[str, Any]] = []

    def job(local_rank: int) -> None:
        summaries.append(train(cfg, recipe, handlers, loss_fn, optimizer, on_settled=on_settled))  # rank 0 holds the lock
        idist.barrier()  # as _worker: every rank past its last collective before the group is destroyed

    with idist.Parallel(_backend(cfg)) as parallel:
        if console is not None:
            console(idist.get_rank())
        parallel.run(job)
    return summaries[0]
