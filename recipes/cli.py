"""The ``flint`` command: ``flint list`` and ``flint run RECIPE [options]``.

Exit status: 0 completed; 3 interrupted with a checkpoint saved (relaunch with ``--resume``);
2 bad usage, one line naming the bad value and the choices; 1 any other failure, one line
``flint: error: ...`` (the traceback goes to the run's ``train.log``, or to the terminal with ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from handlers import LR_MODES
from recipes import RECIPES
from recipes.config import DEVICES, Config, UsageError, check_global_batch
from recipes.export import FORMATS, export_model
from recipes.report import write_report
from recipes.optim import DEFAULT_LOSS, LOSSES, OPTIMIZERS, REFUSED_OPTIMIZERS, make_loss
from recipes.train import build_optimizer, resolve_device, resume_point, train

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not usage + line
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative number")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _epoch_list(text: str) -> list[int]:
    epochs = [_positive_int(part) for part in text.split(",")]
    if epochs != sorted(set(epochs)):
        raise argparse.ArgumentTypeError(f"{text!r} is not increasing epochs, e.g. 30,60,90")
    return epochs


def _optimizer(name: str) -> str:
    if name in REFUSED_OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"{name} is not supported: {REFUSED_OPTIMIZERS[name]}; choose from {', '.join(OPTIMIZERS)}")
    if name not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(OPTIMIZERS)})")
    return name


def _label_smoothing(text: str) -> float:
    value = _non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _lr_mult(text: str) -> tuple[str, float]:
    name, sep, factor = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FACTOR, e.g. fc2=0.1")
    return name, _positive_float(factor)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flint", description="Flint: the BMXNet training loop on PyTorch-Ignite.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,report,export}", parser_class=_Parser)
    commands.add_parser("list", help="list the recipes")
    report = commands.add_parser("report", help="plot a run's curves to RUN_DIR/report.png and print its results")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    export = commands.add_parser("export", help="export a trained model")
    export.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best checkpoint) or a checkpoint")
    export.add_argument("--format", choices=FORMATS, required=True, help="onnx, torchscript or state_dict")
    export.add_argument("-o", "--output", help="file to write (default RUN_DIR/model.<format suffix>)")
    export.add_argument("--debug", action="store_true", help="show tracebacks and the exporter's log")
    run = commands.add_parser("run", help="train a recipe", argument_default=argparse.SUPPRESS)
    run.add_argument("recipe", choices=sorted(RECIPES), help="recipe name (see `flint list`)")
    run.add_argument("--dataset", help="dataset; default: the recipe's first")
    run.add_argument("--data-dir", help="where real datasets are (default ./data)")
    run.add_argument("--download", action="store_true", help="download a missing dataset into --data-dir")
    run.add_argument("--num-workers", type=_non_negative_int, help="DataLoader worker processes (default 0)")
    run.add_argument("--data-on-device", action="store_true", help="hold the whole dataset as tensors on the device")
    run.add_argument("--epochs", type=_positive_int, help="training epochs")
    run.add_argument("--batch-size", type=_positive_int, help="samples per batch")
    run.add_argument("--lr", type=_positive_float, help="base learning rate")
    run.add_argument("--optimizer", type=_optimizer, metavar="{" + ",".join(OPTIMIZERS) + "}", help="optimizer")
    run.add_argument("--momentum", type=_non_negative_float, help="momentum (sgd, rmsprop)")
    run.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    run.add_argument("--wd", type=_non_negative_float, help="weight decay (not on biases and normalisation parameters)")
    run.add_argument("--wd-all", action="store_true", help="weight decay on every parameter, biases and BatchNorm too")
    losses = sorted({name for task in LOSSES.values() for name in task})
    run.add_argument("--loss", metavar="{" + ",".join(losses) + "}", help="loss; must fit the recipe's task")
    run.add_argument("--label-smoothing", type=_label_smoothing, help="cross-entropy label smoothing (default 0)")
    run.add_argument(
        "--lr-mult", type=_lr_mult, action="append", metavar="NAME=FACTOR",
        help="parameters whose name contains NAME get lr*FACTOR in their own param group (repeatable)",
    )  # fmt: skip
    run.add_argument("--log-interval", type=_positive_int, help="iterations between batch log records (default 50)")
    run.add_argument("--update-cycle", type=_positive_int, help="batches per optimizer step (default 1)")
    run.add_argument("--lr-mode", choices=LR_MODES, help="LR schedule, updated every iteration (default constant)")
    run.add_argument("--lr-steps", type=_epoch_list, metavar="E1,E2,...", help="--lr-mode step: epochs to decay after")
    run.add_argument("--lr-factor", type=_positive_float, help="--lr-mode step: decay factor (default 0.1)")
    run.add_argument("--warmup-epochs", type=_non_negative_int, help="epochs of linear LR warmup (default 0)")
    run.add_argument("--warmup-lr", type=_non_negative_float, help="LR at the start of warmup (default 0)")
    run.add_argument("--seed", type=int, help="random seed (default 42)")
    run.add_argument("--device", choices=DEVICES, help="device (default auto: cuda if available)")
    run.add_argument("-o", "--output-dir", help="run directory (default runs/RECIPE)")
    run.add_argument(
        "--resume", nargs="?", const="", metavar="PATH",
        help="continue from a checkpoint; without PATH the latest in the output dir",
    )  # fmt: skip
    run.add_argument("--interrupt-at", type=_positive_int, metavar="EPOCH", help="save and exit 3 after this epoch")
    run.add_argument(
        "--early-stopping", type=_positive_int, metavar="PATIENCE",
        help="stop after PATIENCE validations without improvement of the monitored metric",
    )  # fmt: skip
    run.add_argument("--save-frequency", type=_positive_int, metavar="N", help="epochs between checkpoints (default 1)")
    run.add_argument("--test-run", action="store_true", help="one training and one validation batch per epoch")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--progress-file", metavar="PATH", help="keep epoch and run ETA in this JSON file")
    run.add_argument("--amp", action="store_true", help="mixed precision (bf16 autocast)")
    run.add_argument("--channels-last", action="store_true", help="channels-last memory format for convolutions")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (a one-off compile at the start)")
    run.add_argument("--profile", action="store_true", help="log each handler's time at the end of the run")
    run.add_argument(
        "--nproc-per-node", type=_positive_int, metavar="N",
        help="data-parallel workers spawned on this machine (gloo on CPU, nccl on CUDA); --batch-size is global",
    )  # fmt: skip
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """Recipe defaults, overridden by the options given, checked together."""
    recipe = RECIPES[args.recipe]
    given = vars(args)
    known = {f.name for f in fields(Config)}
    values = {**recipe.defaults, **{k: v for k, v in given.items() if k in known}}
    values["lr_mult"] = dict(given.get("lr_mult", []))
    values["progress"] = not given.get("no_progress", False)
    values["dataset"] = values.get("dataset") or recipe.default_dataset
    if values["dataset"] not in recipe.datasets:
        raise UsageError(f"--dataset {values['dataset']!r}: {recipe.name} takes {', '.join(recipe.datasets)}")
    values["output_dir"] = values.get("output_dir") or f"runs/{recipe.name}"
    values["device"] = str(resolve_device(values.get("device", "auto")))
    values["loss"] = values.get("loss") or DEFAULT_LOSS[recipe.task]
    cfg = Config(**values)
    make_loss(recipe.task, cfg.loss, cfg.label_smoothing)
    with torch.device("meta"):  # the model's parameters without memory: checks --lr-mult and the optimizer
        build_optimizer(cfg, recipe.build_model())
    if cfg.interrupt_at is not None and cfg.interrupt_at >= cfg.epochs:
        raise UsageError(f"--interrupt-at {cfg.interrupt_at}: must be below --epochs {cfg.epochs}")
    if cfg.lr_mode == "step" and not cfg.lr_steps:
        raise UsageError("--lr-mode step needs --lr-steps E1,E2,...: the epochs after which to decay")
    if cfg.lr_steps and cfg.lr_mode != "step":
        raise UsageError(f"--lr-steps applies to --lr-mode step, not {cfg.lr_mode}")
    if cfg.data_on_device and cfg.num_workers:
        raise UsageError("--data-on-device serves batches from device memory; it takes no --num-workers")
    check_global_batch(cfg.batch_size, int(os.environ.get("WORLD_SIZE", "0")) or cfg.nproc_per_node)
    if cfg.device.startswith("cuda") and cfg.nproc_per_node > torch.cuda.device_count():
        raise UsageError(f"--nproc-per-node {cfg.nproc_per_node}: only {torch.cuda.device_count()} CUDA devices here")
    if cfg.warmup_epochs >= cfg.epochs:
        raise UsageError(f"--warmup-epochs {cfg.warmup_epochs}: must be below --epochs {cfg.epochs}")
    return cfg


class _ConsoleHandler(logging.StreamHandler):
    """Writes through tqdm, so log lines print above a progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend(cfg: Config) -> str:
    return "nccl" if cfg.device.startswith("cuda") else "gloo"


@dataclass(frozen=True)
class WorkerResult:
    """What a spawned worker reports to the launching process: its status, or the error it stopped on."""

    rank: int
    status: str | None  # "completed" or "interrupted"; None if it failed
    error: str | None = None  # the exception's class name
    message: str = ""

    # Flint's exceptions rebuilt in the launching process as they were raised; others become RuntimeError.
    KNOWN: ClassVar[dict[str, type[BaseException]]] = {"UsageError": UsageError, "KeyboardInterrupt": KeyboardInterrupt}

    def raise_error(self) -> None:
        kind = self.KNOWN.get(self.error or "", RuntimeError)
        raise kind(self.message or self.error)


def _worker(local_rank: int, cfg: Config, debug: bool, results: Any) -> None:
    """One spawned data-parallel worker: the run's training job on its rank, reported as a WorkerResult."""
    import ignite.distributed as idist

    rank = idist.get_rank()
    _setup_console_logging(debug, rank=rank)
    if not cfg.device.startswith("cuda"):  # share the cores: oversubscribed OpenMP threads spin and crawl
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))
    try:
        status = train(cfg, RECIPES[cfg.recipe])
    except BaseException as e:  # reported, then a non-zero exit: the launcher stops the other workers
        results.put(WorkerResult(rank, None, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
        sys.exit(EXIT_USAGE if isinstance(e, UsageError) else 130 if isinstance(e, KeyboardInterrupt) else EXIT_FAILED)
    if rank == 0:
        results.put(WorkerResult(rank, status))
    # Every rank past its last collective before Ignite destroys the process group: one rank tearing
    # gloo down while the other still has work in flight aborted it (SIGABRT, about 1 run in 10).
    idist.barrier()


def _spawn(cfg: Config, debug: bool) -> str:
    """Run ``cfg`` on ``cfg.nproc_per_node`` local workers through ``idist.Parallel``; the run's status."""
    import ignite.distributed as idist
    import multiprocessing
    import torch.multiprocessing as mp

    resume_point(cfg)  # bad usage is found here, once, not by every worker
    results = mp.get_context("spawn").SimpleQueue()

    def forward(signum: int, frame: object) -> None:  # schedulers may signal only this process
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)  # type: ignore[arg-type]
            except ProcessLookupError:  # it has just exited
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    launch_error: Exception | None = None
    try:
        with idist.Parallel(_backend(cfg), nproc_per_node=cfg.nproc_per_node, master_port=_free_port()) as parallel:
            parallel.run(_worker, cfg, debug, results)
    except Exception as e:  # a worker exited non-zero: its own report says why
        launch_error = e
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    reports = []
    while not results.empty():
        reports.append(results.get())
    failed = sorted((r for r in reports if r.error), key=lambda r: r.rank)
    if failed:
        failed[0].raise_error()
    if launch_error is not None or not reports:
        reason = str(launch_error).strip().splitlines()[0] if launch_error else "no result"
        raise RuntimeError(f"a worker ended without reporting a result ({reason}); see train.log")
    return str(reports[0].status)


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


def _under_torchrun(cfg: Config) -> str:
    """One worker of a torchrun launch: the process group comes from torchrun's environment."""
    import ignite.distributed as idist

    _check_restartable()
    status: list[str] = []

    def job(local_rank: int) -> None:
        status.append(train(cfg, RECIPES[cfg.recipe]))
        idist.barrier()  # as _worker: every rank past its last collective before the group is destroyed

    with idist.Parallel(_backend(cfg)) as parallel:
        _setup_console_logging("--debug" in sys.argv, rank=idist.get_rank())
        parallel.run(job)
    return status[0]


def _setup_console_logging(debug: bool, rank: int = 0) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for old in [h for h in root.handlers if isinstance(h, _ConsoleHandler)]:  # main() called again in-process
        root.removeHandler(old)
    console = _ConsoleHandler(sys.stderr)
    console.setLevel(logging.DEBUG if debug else logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    # Ignite logs an ERROR per engine as an exception passes; the CLI's own one line says it once.
    console.addFilter(lambda record: not record.name.startswith("ignite"))
    root.addHandler(console)
    logging.getLogger("ignite").setLevel(logging.WARNING)  # its warnings and errors still reach train.log


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flint`` command line; returns the exit status."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "list":
            for recipe in RECIPES.values():
                others = ", ".join(list(recipe.datasets)[1:])
                print(f"{recipe.name:<7} {recipe.description} [dataset: {recipe.default_dataset}; also: {others}]")
            return EXIT_OK
        if args.command in ("report", "export"):
            _setup_console_logging(debug)
            if not debug:  # stdout carries the result; the terminal shows warnings only (exporters log progress)
                for handler in logging.getLogger().handlers:
                    if isinstance(handler, _ConsoleHandler):
                        handler.setLevel(logging.WARNING)
        if args.command == "report":
            path, table = write_report(args.run_dir)
            print(table)
            print(f"curves: {path}")
            return EXIT_OK
        if args.command == "export":
            print(export_model(args.path, args.format, args.output))
            return EXIT_OK
        cfg = resolve_config(args)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun, one process per worker
            status = _under_torchrun(cfg)
        elif cfg.nproc_per_node > 1:
            _setup_console_logging(debug)
            status = _spawn(cfg, debug)
        else:
            _setup_console_logging(debug)
            status = train(cfg, RECIPES[cfg.recipe])
    except UsageError as e:
        print(f"flint: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("flint: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"flint: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_INTERRUPTED if status == "interrupted" else EXIT_OK
