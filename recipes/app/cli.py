"""The ``flint`` command: ``list``, ``run``, ``resume``, ``evaluate``, ``report`` and ``export``.

Exit status: 0 completed; 3 stopped with a checkpoint to resume from (``--interrupt-at``, SIGTERM,
a first Ctrl-C; relaunch with ``flint resume RUN_DIR``); 2 bad usage, one line naming the bad value
and the choices, nothing written; 1 any other failure, one line ``flint: error: ...`` (the traceback
goes to the run's ``train.log``, or to the terminal with ``--debug``); 128+N when signal N stopped it
with nothing to resume (130 for SIGINT, 143 for SIGTERM).

The command imports torch only once it has a run to do: ``--help``, ``list`` and every bad option
answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flint.recipes.app.config import (
    DEVICES,
    OPTIMIZERS,
    REFUSED_OPTIMIZERS,
    Config,
    StopSignal,
    UsageError,
    option_fields,
    option_name,
    resolve_config,
)
from flint.recipes.app.console import log_to_console
from flint.recipes.app.export import FORMATS  # torch-free until a model is exported
from flint.recipes.app.registry import BUILTIN, Recipe, builtin_recipes, entry_point_names, load_recipe, resolve_spec
from flint.recipes.app.rundir import RESUMABLE_CHANGES, check_not_in_use

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
# Options `flint resume` may be given again: those that do not alter what is trained.
RESUME_OPTIONS = tuple(o for o in RESUMABLE_CHANGES if o not in ("resume", "output_dir"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not usage + line
        raise UsageError(message)


# --- option text -> value (ranges and combinations are checked by flint.recipes.app.config) -------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _epochs(text: str) -> list[int]:
    return [_int(part) for part in text.split(",")]


def _name_factor(text: str) -> tuple[str, float]:
    name, sep, factor = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FACTOR, e.g. fc2=0.1")
    return name, _float(factor)


def _optimizer(name: str) -> str:
    if name in REFUSED_OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"{name} is not supported: {REFUSED_OPTIMIZERS[name]}; choose from {', '.join(OPTIMIZERS)}")
    return name


_CONVERT = {"int": _int, "int | None": _int, "float": _float, "float | None": _float, "list[int]": _epochs}


def _add_options(parser: argparse.ArgumentParser, recipe: Recipe | None, only: Sequence[str] | None = None) -> None:
    """One option per :class:`flint.recipes.app.config.Config` field (or, for ``flint resume``, those in ``only``,
    whose defaults are the run's), with its default in the help."""
    overridden = {key for r in builtin_recipes().values() for key in r.defaults}
    for f in option_fields():
        if only is not None and f.name not in only:
            continue
        opt = f.metadata["option"]
        flags = [*([opt.short] if opt.short else []), option_name(f.name, "cli")]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if only is not None:
            shown = "default: the run's"
        elif recipe is not None and f.name == "dataset":
            shown = f"{recipe.default_dataset}; also {', '.join(list(recipe.datasets)[1:]) or 'none'}"
        elif recipe is not None and f.name in recipe.defaults:
            shown = f"default {recipe.defaults[f.name]!r}, the recipe's"
        elif recipe is None and f.name in overridden:
            shown = f"default: the recipe's, else {default!r}"
        else:
            shown = f"default {default!r}" if default not in (None, "", [], {}, False) else ""
        help_text = opt.help + (f" ({shown})" if shown and opt.kind != "switch" else "")
        if opt.kind == "switch":
            parser.add_argument(*flags, dest=f.name, action="store_const", const=not opt.flag, help=help_text)
        elif opt.kind == "list":
            parser.add_argument(*flags, dest=f.name, type=_name_factor, action="append", metavar=opt.metavar, help=help_text)
        elif opt.kind == "optional":
            parser.add_argument(*flags, dest=f.name, nargs="?", const="", metavar=opt.metavar, help=help_text)
        else:
            convert = _optimizer if f.name == "optimizer" else _CONVERT.get(str(f.type), str)
            parser.add_argument(*flags, dest=f.name, type=convert, metavar=opt.metavar, help=help_text)


def build_parser(recipe: Recipe | None = None) -> argparse.ArgumentParser:
    """The command line; ``recipe``'s defaults shown in ``flint run RECIPE --help``."""
    parser = _Parser(prog="flint", description="Flint: the BMXNet training loop on PyTorch-Ignite.")
    parser.add_argument("--version", action="version", version=f"flint {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,resume,evaluate,report,export}",
                                     parser_class=_Parser)  # fmt: skip
    commands.add_parser("list", help="list the recipes: the built-ins and installed packages'")
    run = commands.add_parser("run", help="train a recipe", argument_default=argparse.SUPPRESS,
                              description=recipe.description if recipe else "Train a recipe with the options given.")  # fmt: skip
    run.add_argument("recipe", metavar="RECIPE", help=f"{', '.join(BUILTIN)}, an installed recipe, path/to/file.py[:NAME] or package.module:NAME")
    _add_options(run, recipe)
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    resume = commands.add_parser("resume", help="continue a run with the options in RUN_DIR/config.json", argument_default=argparse.SUPPRESS)
    resume.add_argument("run_dir", metavar="RUN_DIR")
    _add_options(resume, None, only=RESUME_OPTIONS)
    resume.add_argument("--debug", action="store_true", help="show tracebacks")
    evaluate = commands.add_parser("evaluate", help="evaluate a run's best checkpoint (or the one given) on its validation set")
    evaluate.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    evaluate.add_argument("--dataset", metavar="NAME", help="another of the recipe's datasets (default: the run's)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto", help="default auto: cuda if available")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on the last line of stdout")
    evaluate.add_argument("--debug", action="store_true", help="show tracebacks")
    report = commands.add_parser("report", help="plot a run's curves to RUN_DIR/report.png and print its results")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    export = commands.add_parser("export", help="export a trained model")
    export.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best checkpoint) or a checkpoint")
    export.add_argument("--format", choices=FORMATS, required=True, help="onnx, torchscript or state_dict")
    export.add_argument("-o", "--output", help="file to write (default RUN_DIR/model.<format suffix>)")
    export.add_argument("--debug", action="store_true", help="show tracebacks and the exporter's log")
    return parser


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("flint")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as :class:`flint.recipes.app.config.Config` values."""
    known = {f.name for f in option_fields()}
    given = {k: v for k, v in vars(args).items() if k in known}
    if "lr_mult" in given:
        given["lr_mult"] = dict(given["lr_mult"])
    return given


# --- what each command does ----------------------------------------------------------------------


def _list() -> int:
    for recipe in builtin_recipes().values():
        print(_recipe_line(recipe.name, recipe))
    installed = entry_point_names()
    if installed:
        print("installed (entry points flint.recipes):")
        for name in sorted(installed):
            try:
                print(_recipe_line(name, load_recipe(name)))
            except UsageError as e:
                print(f"{name:<7} cannot be loaded: {e}")
    return EXIT_OK


def _recipe_line(name: str, recipe: Recipe) -> str:
    others = ", ".join(list(recipe.datasets)[1:])
    return f"{name:<7} {recipe.description} [dataset: {recipe.default_dataset}{'; also: ' + others if others else ''}]"


def _run(args: argparse.Namespace, recipe: Recipe, debug: bool) -> int:
    cfg = resolve_config(recipe, _given(args), spec=resolve_spec(args.recipe))
    args.out_dir = cfg.output_dir
    return _launch(cfg, recipe, debug)


def _resume(args: argparse.Namespace, debug: bool) -> int:
    run_dir = Path(args.run_dir)
    config_file = run_dir / "config.json"
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"resume {run_dir}: no config.json there: not a run directory of flint run") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"resume {run_dir}: cannot read {config_file}: {e}".splitlines()[0]) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("recipe"), str):
        raise UsageError(f"resume {run_dir}: {config_file} names no recipe")
    if saved["recipe"].startswith("fit:"):
        raise UsageError(f"resume {run_dir}: the run was made by fit(); call fit() again with resume=True")
    recipe = load_recipe(saved["recipe"])
    known = {f.name for f in option_fields()}
    given = _given(args)
    options = {**{k: v for k, v in saved.items() if k in known}, **given, "output_dir": str(run_dir), "resume": ""}
    cfg = resolve_config(recipe, options, spec=saved["recipe"], typed=set(given))
    args.out_dir = cfg.output_dir
    return _launch(cfg, recipe, debug)


def _launch(cfg: Config, recipe: Recipe, debug: bool) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 holds the directory for all
        check_not_in_use(cfg.output_dir)  # before torch is imported: a second run is told at once
    from flint.recipes.app.launch import exit_finished_worker, launch, under_torchrun  # torch, Ignite and the rest: only now

    console = functools.partial(log_to_console, debug)
    console(0)
    summary = launch(cfg, recipe, console=console, on_settled=_SETTLED.set)
    code = EXIT_INTERRUPTED if summary.get("status") == "interrupted" else EXIT_OK
    if under_torchrun():  # this process is a worker: its run is over on every rank
        exit_finished_worker(code)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    from flint.recipes.app.evaluate import evaluate

    log_to_console(args.debug, quiet=not args.debug)
    result = evaluate(args.path, dataset=args.dataset, device=args.device)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<12} {value:.4f}" if isinstance(value, float) else f"{key:<12} {value}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from flint.recipes.app.report import write_report

    log_to_console(args.debug, quiet=not args.debug)
    path, table = write_report(args.run_dir)
    print(table)
    print(f"curves: {path}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from flint.recipes.app.export import export_model

    log_to_console(args.debug, quiet=not args.debug)  # stdout carries the path; exporters log progress
    print(export_model(args.path, args.format, args.output))
    return EXIT_OK


# --- the terminal ----------------------------------------------------------------------------------


_SETTLED = threading.Event()  # the run's outcome is decided: stop signals no longer change it


def _stop_before_training(signum: int, frame: object) -> None:
    if not _SETTLED.is_set():
        raise StopSignal(signum)


def _resumable(args: argparse.Namespace | None) -> Path | None:
    """The newest checkpoint a relaunch of this command would resume from, if any."""
    out = getattr(args, "out_dir", None)
    if out is None:
        return None
    found = [p for p in (Path(out) / "checkpoints").glob("checkpoint_*.pt") if p.stem.split("_")[-1].isdigit()]
    return max(found, key=lambda p: int(p.stem.split("_")[-1])) if found else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flint`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    # Until a run's own handlers take over, SIGTERM or SIGINT ends the launch with one line (no
    # traceback); once its outcome is decided they are ignored.
    _SETTLED.clear()
    training = bool(argv) and argv[0] in ("run", "resume")
    previous = {s: signal.signal(s, _stop_before_training) for s in (signal.SIGTERM, signal.SIGINT)} if training else {}
    args: argparse.Namespace | None = None
    try:
        recipe = load_recipe(argv[1]) if len(argv) > 1 and argv[0] == "run" and not argv[1].startswith("-") else None
        args = build_parser(recipe).parse_args(argv)
        if args.command == "list":
            return _list()
        if args.command == "run":
            return _run(args, recipe or load_recipe(args.recipe), debug)
        if args.command == "resume":
            return _resume(args, debug)
        return {"evaluate": _evaluate, "report": _report, "export": _export}[args.command](args)
    except UsageError as e:
        print(f"flint: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # a second stop signal during training (no checkpoint for this stop), or Ctrl-C
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"flint: aborted: {e}" if str(e) else "flint: interrupted", file=sys.stderr)
        return 128 + int(signum)
    except StopSignal as e:
        found = _resumable(args)
        where = f"flint resume {args.out_dir} continues from {found}" if found else "nothing to resume"  # type: ignore[union-attr]
        print(f"flint: {e}; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED if found else 128 + e.signum
    except Exception as e:
        if debug:
            traceback.print_exc()
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"flint: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
