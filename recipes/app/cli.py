"""The ``flint`` command: ``list``, ``run``, ``resume``, ``evaluate``, ``report``, ``export``, ``lr-find``, ``predict`` and ``runs``.

Exit status: 0 completed; 3 stopped with a checkpoint to resume from (``--interrupt-at``, SIGTERM,
a first Ctrl-C; relaunch with ``flint resume RUN_DIR``); 2 bad usage, one line naming the bad value
and the choices, nothing written; 1 any other failure, one line ``flint: error: ...`` (the traceback
goes to the run's ``train.log``, or to the terminal with ``--debug``); 128+N when signal N stopped it
with nothing to resume (130 for SIGINT, 143 for SIGTERM). Once a command's outcome is settled (a
run's summary is being written, a command's result printed), no signal changes its exit status
(:mod:`flint.recipes.app.stopping`).

The command imports torch only once it has a run to do: ``--help``, ``list``, ``runs`` and every bad
option answer at once. ``@FILE`` stands for the arguments in FILE, one a line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from flint import __version__
from flint.recipes.app.config import DEVICES, Config, UsageError, option_fields, option_name, resolve_config, style_of
from flint.recipes.app.config_file import file_options, format_options, given_in_file
from flint.recipes.app.console import log_to_console
from flint.recipes.app.export import FORMATS  # torch-free until a model is exported
from flint.recipes.app.fingerprint import check_recipe_file
from flint.recipes.app.registry import BUILTIN, Recipe, builtin_recipes, entry_point_names, load_recipe, resolve_spec
from flint.recipes.app.rundir import RunDir
from flint.recipes.app.stopping import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, STOPS, StopSignal, exit_status

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not usage + line
        raise UsageError(message)


def _add_options(parser: argparse.ArgumentParser, recipe: Recipe | None, resuming: bool = False, skip: frozenset[str] = frozenset()) -> None:
    """One option per :class:`flint.recipes.app.config.Config` field of the command line but those in ``skip`` (for
    ``flint resume``, those a resumed run may change, whose defaults are the run's), with its default in the help."""
    overridden = {key for r in builtin_recipes().values() for key in r.defaults}
    for f in option_fields("cli"):
        opt = f.metadata["option"]
        if f.name in skip or (resuming and (not opt.resumable or f.name in ("resume", "output_dir", "overwrite", "init_from"))):
            continue
        flags = [*([opt.short] if opt.short else []), option_name(f.name, "cli")]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if resuming:
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
            parser.add_argument(*flags, dest=f.name, type=opt.parse, action="append", metavar=opt.metavar, help=help_text)
        elif opt.kind == "optional":
            parser.add_argument(*flags, dest=f.name, nargs="?", const="", metavar=opt.metavar, help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, type=opt.parse, metavar=opt.metavar, help=help_text)


def build_parser(recipe: Recipe | None = None) -> argparse.ArgumentParser:
    """The command line; ``recipe``'s defaults shown in ``flint run RECIPE --help``."""
    parser = _Parser(prog="flint", description="Flint: the BMXNet training loop on PyTorch-Ignite.", fromfile_prefix_chars="@")
    parser.add_argument("--version", action="version", version=f"flint {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,resume,evaluate,report,export,lr-find,predict,runs}",
                                     parser_class=_Parser)  # fmt: skip
    commands.add_parser("list", help="list the recipes: the built-ins and installed packages'")
    run = commands.add_parser("run", help="train a recipe", argument_default=argparse.SUPPRESS,
                              description=recipe.description if recipe else "Train a recipe with the options given.")  # fmt: skip
    run.add_argument("recipe", metavar="RECIPE", help=f"{', '.join(BUILTIN)}, an installed recipe, path/to/file.py[:NAME] or package.module:NAME")
    _add_options(run, recipe)
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    run.add_argument("--config", metavar="FILE", help="options from a JSON, YAML or TOML file, by their names in config.json; "
                     "options given here win")  # fmt: skip
    run.add_argument("--print-config", nargs="?", const="json", choices=("json", "yaml", "toml"), metavar="FORMAT",
                     help="print the resolved options as a config file (json, yaml or toml; default json) and exit")  # fmt: skip
    _add_verbosity(run)
    resume = commands.add_parser("resume", help="continue a run with the options in RUN_DIR/config.json", argument_default=argparse.SUPPRESS)
    resume.add_argument("run_dir", metavar="RUN_DIR")
    _add_options(resume, None, resuming=True)
    resume.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_verbosity(resume)
    evaluate = commands.add_parser("evaluate", help="evaluate a run's best checkpoint (or the one given) on its validation set")
    evaluate.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    evaluate.add_argument("--dataset", metavar="NAME", help="another of the recipe's datasets (default: the run's)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto", help="default auto: cuda if available")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on the last line of stdout")
    evaluate.add_argument("--debug", action="store_true", help="show tracebacks")
    report = commands.add_parser("report", help="plot a run's curves to RUN_DIR/report.png and print its results; "
                                 "several runs: their curves in one figure and a table")  # fmt: skip
    report.add_argument("run_dirs", nargs="+", metavar="RUN")
    report.add_argument("-o", "--output", metavar="FILE",
                        help="the PNG to write (default RUN/report.png; several runs: compare.png beside them)")  # fmt: skip
    report.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    export = commands.add_parser("export", help="export a trained model")
    export.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (its best checkpoint) or a checkpoint")
    export.add_argument("--format", choices=FORMATS, required=True, help="onnx, torchscript or state_dict")
    export.add_argument("-o", "--output", help="file to write (default RUN_DIR/model.<format suffix>)")
    export.add_argument("--debug", action="store_true", help="show tracebacks and the exporter's log")
    _add_lr_find(commands, recipe)
    _add_predict(commands)
    _add_runs_command(commands)
    return parser


_NOT_LR_FIND = frozenset(f.name for f in option_fields() if not f.metadata["option"].step)  # lr-find sweeps the LR and keeps no run


def _add_lr_find(commands: Any, recipe: Recipe | None) -> None:
    from flint.recipes.app.lr_find import LRSweep

    default = LRSweep()
    lr_find = commands.add_parser("lr-find", help="sweep the LR over a recipe's training steps (Ignite's FastaiLRFinder): DIR/lr_find.png "
                                  "and the suggested --lr as the last line", argument_default=argparse.SUPPRESS)  # fmt: skip
    lr_find.add_argument("recipe", metavar="RECIPE", help="as for flint run")
    _add_options(lr_find, recipe, skip=_NOT_LR_FIND)
    lr_find.add_argument("--start-lr", type=float, metavar="X", help=f"the first LR tried (default {default.start_lr:g})")
    lr_find.add_argument("--end-lr", type=float, metavar="X", help=f"the last LR tried (default {default.end_lr:g})")
    lr_find.add_argument("--num-iter", type=int, metavar="N", help=f"iterations of the sweep (default {default.num_iter})")
    lr_find.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser("predict", help="one CSV row per validation sample: target, prediction, probabilities or score")
    predict.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory (the checkpoint flint evaluate takes) or a checkpoint")
    predict.add_argument("--dataset", metavar="NAME", help="another of the recipe's datasets (default: the run's)")
    predict.add_argument("--device", choices=DEVICES, default="auto", help="default auto: cuda if available")
    predict.add_argument("-o", "--output", metavar="FILE.csv", help="file to write (default RUN_DIR/predictions.csv)")
    predict.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q`` and ``-v`` of a training command: what the terminal shows (``train.log`` has everything either way)."""
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                       help="only errors on the terminal, no progress bar (train.log has everything)")  # fmt: skip
    shown.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                       help="Ignite's own log lines on the terminal too")  # fmt: skip


def _add_runs_command(commands: Any) -> None:
    runs = commands.add_parser("runs", help="a table of the runs under each DIR (default runs/): status, epochs, best metric, times")
    runs.add_argument("dirs", nargs="*", metavar="DIR")
    runs.add_argument("--json", action="store_true", help="print a JSON list, one object per run")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as :class:`flint.recipes.app.config.Config` values."""
    known = {f.name for f in option_fields("cli")}
    given = {k: v for k, v in vars(args).items() if k in known}
    if "lr_mult" in given:
        given["lr_mult"] = dict(given["lr_mult"])
    return given


# --- what each command does ----------------------------------------------------------------------


def _list() -> int:
    lines = [_recipe_line(recipe.name, recipe) for recipe in builtin_recipes().values()]
    installed = entry_point_names()
    if installed:
        lines.append("installed (entry points flint.recipes):")
        for name in sorted(installed):
            try:
                lines.append(_recipe_line(name, load_recipe(name)))
            except UsageError as e:
                lines.append(f"{name:<7} cannot be loaded: {e}")
    return _print_settled("\n".join(lines))


def _recipe_line(name: str, recipe: Recipe) -> str:
    others = ", ".join(list(recipe.datasets)[1:])
    return f"{name:<7} {recipe.description} [dataset: {recipe.default_dataset}{'; also: ' + others if others else ''}]"


def _run(args: argparse.Namespace, recipe: Recipe, debug: bool) -> int:
    given = _given(args)
    from_file = file_options(args.config, "cli") if getattr(args, "config", None) else {}
    typed = set(given) | given_in_file(from_file, recipe)
    cfg = resolve_config(recipe, {**from_file, **given}, spec=resolve_spec(args.recipe), typed=typed)
    if getattr(args, "print_config", None):
        return _print_settled(format_options(cfg, args.print_config))
    args.out_dir = cfg.output_dir
    return _launch(cfg, recipe, debug, args.verbosity)


def _resume(args: argparse.Namespace, debug: bool) -> int:
    run = RunDir(args.run_dir)
    run.check_not_in_use()  # a run still starting has no config.json yet
    saved = run.config()
    if saved is None:
        raise UsageError(f"resume {run.path}: no config.json there: not a run directory of flint run")
    if not isinstance(saved.get("recipe"), str):
        raise UsageError(f"resume {run.path}: {run.config_file} names no recipe")
    if style_of(saved["recipe"]) == "python":
        raise UsageError(f"resume {run.path}: the run was made by fit(); call fit() again with resume=True")
    check_recipe_file(saved["recipe"], saved.get("fingerprint"), str(run.path))  # the code the run recorded, before it is run
    recipe = load_recipe(saved["recipe"])
    known = {f.name for f in option_fields()}
    given = _given(args)
    options = {**{k: v for k, v in saved.items() if k in known}, **given, "output_dir": str(run.path), "resume": ""}
    cfg = resolve_config(recipe, options, spec=saved["recipe"], typed=set(given))
    args.out_dir = cfg.output_dir
    return _launch(cfg, recipe, debug, args.verbosity)


def _launch(cfg: Config, recipe: Recipe, debug: bool, verbosity: int = 0) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 holds the directory for all
        RunDir(cfg.output_dir).check_not_in_use()  # before torch is imported: a second run is told at once
    from flint.recipes.app.launch import exit_finished_worker, launch, under_torchrun  # torch, Ignite and the rest: only now

    console = functools.partial(log_to_console, debug, verbosity=verbosity)
    console(0)
    code = exit_status(launch(cfg, recipe, console=console))
    if under_torchrun():  # this process is a worker: its run is over on every rank
        exit_finished_worker(code)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    from flint.recipes.app.evaluate import evaluate

    log_to_console(args.debug, quiet=not args.debug)
    result = evaluate(args.path, dataset=args.dataset, device=args.device)
    if args.json:
        return _print_settled(json.dumps(result))
    return _print_settled("\n".join(f"{key:<12} {value:.4f}" if isinstance(value, float) else f"{key:<12} {value}" for key, value in result.items()))


def _report(args: argparse.Namespace) -> int:
    from flint.recipes.app.report import write_report

    log_to_console(args.debug, quiet=not args.debug)
    if len(args.run_dirs) > 1:
        return _compare(args.run_dirs, args.output)
    path, table = write_report(args.run_dirs[0], args.output)
    return _print_settled(f"{table}\ncurves: {path}")


def _compare(run_dirs: list[str], output: str | None) -> int:
    from flint.recipes.app.compare import write_comparison
    from flint.recipes.app.run_table import format_table, run_rows

    missing = [d for d in run_dirs if not RunDir(d).metrics_file.is_file()]
    if missing:
        raise UsageError(f"report: no metrics.jsonl in {', '.join(missing)}")
    path = write_comparison(run_dirs, output or os.path.join(os.path.commonpath([os.path.abspath(d) for d in run_dirs]), "compare.png"))
    return _print_settled(f"{format_table(run_rows(run_dirs))}\ncurves: {path}")


def _runs(args: argparse.Namespace) -> int:
    from flint.recipes.app.run_table import as_json, find_runs, format_table, run_rows

    roots = args.dirs or ["runs"]
    rows = run_rows(find_runs(roots))
    if args.json:
        return _print_settled(json.dumps(as_json(rows)))
    return _print_settled(format_table(rows) if rows else f"no runs under {', '.join(roots)}")


def _export(args: argparse.Namespace) -> int:
    from flint.recipes.app.export import export_model

    log_to_console(args.debug, quiet=not args.debug)  # stdout carries the path; exporters log progress
    return _print_settled(str(export_model(args.path, args.format, args.output)))


def _lr_find(args: argparse.Namespace, recipe: Recipe) -> int:
    from flint.recipes.app.lr_find import LRSweep

    cfg = resolve_config(recipe, _given(args), spec=resolve_spec(args.recipe))
    sweep = LRSweep(**{k: getattr(args, k) for k in ("start_lr", "end_lr", "num_iter") if hasattr(args, k)})  # checked before torch
    log_to_console(getattr(args, "debug", False))
    from flint.recipes.app.lr_find import lr_find

    lr, path = lr_find(cfg, recipe, sweep)
    return _print_settled(f"curve: {path}\n{lr:.4g}")


def _predict(args: argparse.Namespace) -> int:
    from flint.recipes.app.predict import write_predictions

    log_to_console(args.debug, quiet=not args.debug)
    return _print_settled(str(write_predictions(args.path, args.dataset, args.output, args.device)[0]))


def _print_settled(text: str) -> int:
    """A command's result: settled (no signal changes the exit status from here), then printed."""
    STOPS.settle()
    print(text, flush=True)
    return EXIT_OK


# --- the terminal ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flint`` command line; returns the exit status.

    SIGTERM and SIGINT are taken at once: until a run's own handlers take over, one ends the command
    with one line (no traceback); once its outcome is settled they are ignored until the process ends."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    STOPS.install()
    args: argparse.Namespace | None = None
    try:
        recipe = load_recipe(argv[1]) if len(argv) > 1 and argv[0] in ("run", "lr-find") and not argv[1].startswith("-") else None
        args = build_parser(recipe).parse_args(argv)
        if args.command == "list":
            return _list()
        if args.command == "run":
            return _run(args, recipe or load_recipe(args.recipe), debug)
        if args.command == "resume":
            return _resume(args, debug)
        if args.command == "lr-find":
            return _lr_find(args, recipe or load_recipe(args.recipe))
        return {"evaluate": _evaluate, "report": _report, "export": _export, "predict": _predict, "runs": _runs}[args.command](args)
    except BaseException as e:  # one line: no later signal can cut it short (Stops raises once)
        STOPS.settle()
        return _failed(e, args, debug)


def _failed(error: BaseException, args: argparse.Namespace | None, debug: bool) -> int:
    """The one line for how a command failed, and its exit status."""
    if isinstance(error, SystemExit):  # --help, --version: argparse's own exit
        return int(error.code or 0) if isinstance(error.code, int) or error.code is None else EXIT_USAGE
    if isinstance(error, UsageError):
        print(f"flint: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(error, KeyboardInterrupt):  # a second stop signal during training (no checkpoint for this stop), or Ctrl-C
        print(f"flint: aborted: {error}" if str(error) else "flint: interrupted", file=sys.stderr)
        return 128 + int(getattr(error, "signum", signal.SIGINT))
    if isinstance(error, StopSignal):
        out = getattr(args, "out_dir", None)
        found = RunDir(out).latest_checkpoint() if out is not None else None
        where = f"flint resume {out} continues from {found}" if found else "nothing to resume"
        print(f"flint: {error}; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED if found else 128 + error.signum
    if not isinstance(error, Exception):
        raise error
    if debug:
        traceback.print_exc()
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"flint: error: {message}", file=sys.stderr)
    return EXIT_FAILED
