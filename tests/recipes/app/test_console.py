"""The console of `flint run`: formatting with plain numbers, the epoch-line sink fed records, the progress
bar on a real trainer, Ignite's own logging routed to train.log, and the real CLI end to end."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping
from ignite.utils import setup_logger

from flint.engine import create_trainer
from flint.handlers import ETA
from flint.recipes.app.console import (
    ConsoleSink,
    closing_lines,
    duration,
    epoch_line,
    for_console,
    header_lines,
    lr_text,
    route_ignite_logging,
    significant,
)
from flint.recipes.app.progress import IntervalLoss, attach_progress_bar


# --- formatting ---------------------------------------------------------------------------------


def test_numbers_have_four_significant_digits():
    assert [significant(v) for v in (0.0479303, 0.98467, 2.42181, 0.25, 1.0, 686.84, 12345.6)] == [
        "0.04793", "0.9847", "2.422", "0.2500", "1.000", "686.8", "1.235e+04",
    ]  # fmt: skip
    assert [significant(v) for v in (float("nan"), float("inf"), 3, "x")] == ["nan", "inf", "3", "x"]


def test_one_lr_when_every_group_agrees_else_the_list():
    assert lr_text([0.0479303, 0.0479303]) == "0.04793"
    assert lr_text([0.05, 0.005, 0.05]) == "[0.05, 0.005, 0.05]"
    assert lr_text([2.3318e-06]) == "2.332e-06" and lr_text(0.1) == "0.1"


def test_durations_read_like_a_clock():
    assert [duration(s) for s in (0.004, 0.0423, 0.1, 0.94, 12.34, 59.94, 59.96, 65.2, 3599.4, 3600.0, 7380.0)] == [
        "4ms", "42ms", "0.1s", "0.9s", "12.3s", "59.9s", "1m00s", "1m05s", "59m59s", "1h00m", "2h03m",
    ]  # fmt: skip
    assert duration(None) == duration(float("nan")) == "?"


TRAINING = {"phase": "training", "epoch": 3, "iteration": 69, "samples": 4314, "accuracy": 0.98467, "loss": 0.0547912,
            "epoch_time": 0.912, "lr": [0.0479303, 0.0479303]}  # fmt: skip
VALIDATION = {"phase": "validation", "epoch": 3, "iteration": 69, "samples": 4314, "loss": 0.10583, "accuracy": 0.969359}


def test_an_epoch_line_reads_like_keras():
    assert epoch_line(3, 10, TRAINING, VALIDATION) == (
        "Epoch  3/10  0.9s  loss 0.05479  accuracy 0.9847  val_loss 0.1058  val_accuracy 0.9694  lr 0.04793"
    )
    assert epoch_line(3, 9, TRAINING, None) == "Epoch 3/9  0.9s  loss 0.05479  accuracy 0.9847  lr 0.04793"
    assert epoch_line(3, 9, None, VALIDATION) == "Epoch 3/9  val_loss 0.1058  val_accuracy 0.9694"


def test_an_epoch_line_shows_regression_metrics_unequal_lrs_and_only_numbers():
    training = {"phase": "training", "epoch": 12, "mae": 1.8893, "loss": 6.7101, "epoch_time": 75.3, "lr": [0.01, 0.001],
                "note": "text", "finite": True, "per_group": [1.0, 2.0]}  # fmt: skip
    validation = {"phase": "validation", "epoch": 12, "loss": 0.44193, "mae": 0.66104}
    assert epoch_line(12, 100, training, validation) == (
        "Epoch  12/100  1m15s  loss 6.710  mae 1.889  val_loss 0.4419  val_mae 0.6610  lr [0.01, 0.001]"
    )


def test_the_header_names_the_run_without_its_config():
    assert header_lines("lenet", "digits", 1438, 359, 62018, "cpu", "runs/lenet", 10) == [
        "lenet on digits: 1,438 training and 359 validation samples; 62,018 parameters",
        "10 epochs on cpu; writing to runs/lenet (every option in config.json, every record in train.log)",
    ]
    first, second = header_lines("resnet", "fake", 256, 64, 11173962, "cuda:0", "/r", 1, world_size=2, test_run=True)
    assert first.endswith("11,173,962 parameters (test run: one batch of each per epoch)")
    assert second.startswith("1 epoch on cuda:0, 2 workers; writing to /r ")


SUMMARY = {"phase": "summary", "status": "completed", "epochs": 10, "samples": 14380, "best_epoch": 8,
           "monitor": "accuracy:max", "best_value": 0.988858, "avg_epoch_time": 0.331, "stopped_early": False, "samples_per_sec": 4344.2,
           "model_tflops": 0.00041424}  # fmt: skip
BEST = "runs/lenet/checkpoints/best_checkpoint_8_accuracy=0.9889.pt"


def test_closing_lines_give_the_best_epoch_its_checkpoint_and_the_epoch_time():
    assert closing_lines(SUMMARY, 10, 10, BEST) == [
        "Completed 10 epochs",
        f"Best epoch 8: val_accuracy 0.9889, saved as {BEST}",
        "Average epoch 0.3s, 4,344 samples/s",
    ]
    gpu = {**SUMMARY, "avg_epoch_time": 75.0, "samples_per_sec": 12000.0, "model_tflops": 312.46, "mfu": 0.41234}
    assert closing_lines(gpu, 10, 10, None)[1:] == [
        "Best epoch 8: val_accuracy 0.9889",
        "Average epoch 1m15s, 12,000 samples/s, MFU 41.2% (312.5 TFLOP/s)",
    ]


def test_closing_lines_of_stopped_runs_say_how_they_stopped():
    early = {**SUMMARY, "epochs": 7, "stopped_early": True}
    assert closing_lines(early, 10, 7, BEST)[0] == "Stopped early after epoch 7/10: the monitored metric stopped improving"
    interrupted = {**SUMMARY, "status": "interrupted", "epochs": 3}
    resume = "and saved; to continue, run the same command with --resume"
    assert closing_lines(interrupted, 10, 3, BEST)[0] == f"Interrupted after epoch 3/10 {resume}"
    assert closing_lines(interrupted, 10, 2, BEST)[0] == f"Interrupted during epoch 3/10 {resume}"
    first = {**interrupted, "epochs": 1, "best_epoch": None, "best_value": None, "avg_epoch_time": None}
    assert closing_lines(first, 10, None, None) == [f"Interrupted during epoch 1/10 {resume}"]
    regression = {**SUMMARY, "monitor": "loss:min", "best_epoch": 6, "best_value": 0.44193}
    assert closing_lines(regression, 10, 10)[1] == "Best epoch 6: val_loss 0.4419"
    # the CLI's own last line says it: `flint: error: ...`, `flint: interrupted`
    assert closing_lines({**SUMMARY, "status": "failed"}, 10, 3, BEST) == []
    assert closing_lines({**SUMMARY, "status": "aborted"}, 10, 3, BEST) == []


# --- the sink: one line per epoch whatever arrives ----------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def shown():
    """A ConsoleSink factory whose lines are collected; returns (make_sink, lines)."""
    log = logging.getLogger("test-console-sink")
    log.setLevel(logging.INFO)
    log.propagate = False
    lines = Lines()
    log.addHandler(lines)
    yield (lambda epochs, best=None: ConsoleSink(epochs, best, logger=log)), lines.lines
    log.removeHandler(lines)


def rec(phase: str, epoch: int, **fields) -> dict:
    return {"phase": phase, "epoch": epoch, "iteration": epoch * 10, "samples": epoch * 640, **fields}


def train(epoch: int, loss: float, lr=(0.1, 0.1)) -> dict:
    return rec("training", epoch, accuracy=0.5, loss=loss, epoch_time=1.5, lr=list(lr))


def val(epoch: int, loss: float) -> dict:
    return rec("validation", epoch, loss=loss, accuracy=0.75)


def test_training_and_validation_make_one_line_and_the_summary_closes(shown):
    make, lines = shown
    sink = make(2, lambda: Path("out/checkpoints/best_checkpoint_2_accuracy=0.7500.pt"))
    for record in [rec("lr", 1, lr=[0.1, 0.1]), rec("batch", 1, loss=2.0, samples_per_sec=9.0), train(1, 1.0), val(1, 0.5),
                   rec("lr", 2, lr=[0.1, 0.1]), train(2, 0.25), val(2, 0.125),
                   {"phase": "summary", "status": "completed", "epochs": 2, "monitor": "accuracy:max", "best_epoch": 2, "best_value": 0.75,
                    "avg_epoch_time": 1.5, "stopped_early": False, "samples_per_sec": 426.67}]:  # fmt: skip
        sink(record)
    assert lines == [
        "Epoch 1/2  1.5s  loss 1.000  accuracy 0.5000  val_loss 0.5000  val_accuracy 0.7500  lr 0.1",
        "Epoch 2/2  1.5s  loss 0.2500  accuracy 0.5000  val_loss 0.1250  val_accuracy 0.7500  lr 0.1",
        "Completed 2 epochs",
        "Best epoch 2: val_accuracy 0.7500, saved as out/checkpoints/best_checkpoint_2_accuracy=0.7500.pt",
        "Average epoch 1.5s, 427 samples/s",
    ]


def test_epochs_without_validation_are_shown_when_the_next_epoch_or_the_end_comes(shown):
    make, lines = shown
    sink = make(4)
    sink(train(1, 1.0))
    sink(rec("batch", 2, loss=0.9))  # the next epoch's first record shows epoch 1
    assert lines == ["Epoch 1/4  1.5s  loss 1.000  accuracy 0.5000  lr 0.1"]
    sink(train(2, 0.8))
    sink(train(3, 0.7, lr=(0.1, 0.01)))  # no batch record in between (short epochs)
    sink(val(3, 0.6))
    sink(train(4, 0.5))
    sink({"phase": "summary", "status": "completed", "epochs": 4, "monitor": "accuracy:max", "best_epoch": 3, "best_value": 0.75, "avg_epoch_time": None})
    assert [line.split("  ")[0] for line in lines] == ["Epoch 1/4", "Epoch 2/4", "Epoch 3/4", "Epoch 4/4", "Completed 4 epochs",
                                                       "Best epoch 3: val_accuracy 0.7500"]  # fmt: skip
    assert lines[2] == "Epoch 3/4  1.5s  loss 0.7000  accuracy 0.5000  val_loss 0.6000  val_accuracy 0.7500  lr [0.1, 0.01]"
    assert "val_" not in lines[3]


def test_a_run_cut_short_shows_its_last_epoch_once(shown):
    make, lines = shown
    sink = make(5)
    sink(train(1, 1.0))
    sink(rec("custom", 1, norm=2.5))  # a handler of your own: train.log and metrics.jsonl only
    sink(rec("resume", 1, checkpoint="checkpoint_10.pt"))  # a resume (in one process: as the launch's first record)
    sink(train(2, 0.5))
    sink.close()  # no summary: the stream is closed
    sink.close()
    assert [line.split("  ")[0] for line in lines] == ["Epoch 1/5", "Epoch 2/5"]


def test_an_interruption_during_and_after_an_epoch(shown):
    make, lines = shown
    summary = {"phase": "summary", "status": "interrupted", "samples": 1280, "monitor": "accuracy:max", "best_epoch": 1, "best_value": 0.75}
    sink = make(3)
    for record in [train(1, 1.0), val(1, 0.5), rec("batch", 2, loss=0.7), {**summary, "epochs": 2}]:  # SIGTERM in epoch 2
        sink(record)
    assert lines[1:] == ["Interrupted during epoch 2/3 and saved; to continue, run the same command with --resume",
                         "Best epoch 1: val_accuracy 0.7500"]  # fmt: skip
    lines.clear()
    sink = make(3)
    for record in [train(1, 1.0), val(1, 0.5), train(2, 0.5), val(2, 0.25), {**summary, "epochs": 2}]:  # --interrupt-at 2
        sink(record)
    assert lines[1:3] == ["Epoch 2/3  1.5s  loss 0.5000  accuracy 0.5000  val_loss 0.2500  val_accuracy 0.7500  lr 0.1",
                          "Interrupted after epoch 2/3 and saved; to continue, run the same command with --resume"]  # fmt: skip


def test_a_failed_run_shows_its_finished_epochs_and_leaves_the_error_to_the_cli(shown):
    make, lines = shown
    sink = make(3)
    for record in [train(1, 1.0), {"phase": "summary", "status": "failed", "epochs": 2, "best_epoch": None, "best_value": None}]:
        sink(record)
    assert lines == ["Epoch 1/3  1.5s  loss 1.000  accuracy 0.5000  lr 0.1"]


def test_the_sink_refuses_a_bad_epoch_count():
    with pytest.raises(ValueError, match="Argument epochs should be a positive integer, got 0"):
        ConsoleSink(0)


# --- the progress bar ---------------------------------------------------------------------------


def zero_model_trainer() -> tuple[torch.nn.Module, object]:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return model, create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.nn.functional.l1_loss)


def batches(*targets: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One sample each; a zero model's L1 loss on it is the target."""
    return [(torch.zeros(1, 1), torch.full((1, 1), t)) for t in targets]


def test_the_interval_loss_restarts_every_log_interval_and_each_epoch():
    _, trainer = zero_model_trainer()
    loss = IntervalLoss(every=2).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda t: seen.append((t.state.iteration, loss.value(t))))
    trainer.run(batches(1, 3, 5), max_epochs=2)
    # iteration 2 ends an interval; 4 starts epoch 2 and ends an interval; 6 = (3 + 5) / 2
    assert seen == [(1, 1.0), (2, 2.0), (3, 5.0), (4, 1.0), (5, 3.0), (6, 4.0)]
    with pytest.raises(ValueError, match="Argument every should be a positive integer, got 0"):
        IntervalLoss(0)


def test_the_progress_bar_shows_the_interval_mean_loss_without_a_stray_separator():
    _, trainer = zero_model_trainer()
    eta = ETA().attach(trainer)
    out = io.StringIO()
    attach_progress_bar(trainer, eta, log_interval=2, file=out)
    trainer.run(batches(1, 3, 5), max_epochs=2)
    drawn = [part.strip() for part in out.getvalue().split("\r") if "loss=" in part]
    # "Epoch [1/2]: [2/3]  67%|██████▋   | [00:00<00:00, loss=2.000, run ETA=0:00:00]"
    form = re.compile(r"^Epoch \[([12])/2\]: \[([123])/3\] +\d+%\|[^|]*\| \[[^,\]]*, loss=(\S+), run ETA=[0-9:?]+\]$")
    assert drawn and all(form.match(line) for line in drawn), drawn
    # Each redraw draws the new loss once or more (tqdm redraws on set_postfix, and on update if its
    # mininterval has passed): the distinct values in order are one per iteration.
    values = [(m[1], m[3]) for m in map(form.match, drawn)]
    distinct = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert distinct == [("1", "1.000"), ("1", "2.000"), ("1", "5.000"), ("2", "1.000"), ("2", "3.000"), ("2", "4.000")]


# --- logging: Ignite's own lines and the full records reach train.log only ---------------------


def test_the_console_filter_drops_ignite_the_record_lines_and_other_libraries_info():
    def named(name: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.makeLogRecord({"name": name, "levelno": level})

    assert not for_console(named("ignite")) and not for_console(named("ignite.engine.engine.Engine", logging.ERROR))
    assert not for_console(named("flint.records"))
    assert all(for_console(named(n)) for n in ("flint.recipes.app.console", "flint.recipes.app.train", "flint.handlers.checkpointing", "flint.recordsx"))
    assert not for_console(named("torch._subclasses.fake_tensor")) and not for_console(named("flintx"))
    assert for_console(named("torch.distributed", logging.WARNING)) and for_console(named("ignited", logging.ERROR))


def test_ignites_own_loggers_propagate_to_the_root_handlers(tmp_path):
    # setup_logger gives a logger it makes a stderr handler of its own and stops it propagating: such
    # lines bypassed both train.log and the console's filter ("EarlyStopping: Stop training").
    made_before = setup_logger("ignite.distributed.launcher.Parallel", reset=True)  # as idist.Parallel makes it (made afresh: other tests routed it)
    assert made_before.handlers and not made_before.propagate
    route_ignite_logging()
    assert made_before.propagate and not made_before.handlers
    assert logging.getLogger("ignite").getEffectiveLevel() == logging.INFO  # not DEBUG: Ignite would log each event
    log_file = logging.FileHandler(tmp_path / "train.log", encoding="utf-8")
    root = logging.getLogger()
    root.addHandler(log_file)
    try:
        trainer = Engine(lambda e, b: None)
        stopper = EarlyStopping(patience=1, score_function=lambda engine: 0.0, trainer=trainer)  # makes its logger
        stopper(trainer)
        stopper(trainer)  # no improvement: Ignite logs "EarlyStopping: Stop training"
    finally:
        root.removeHandler(log_file)
        log_file.close()
    assert "EarlyStopping: Stop training" in (tmp_path / "train.log").read_text()
    assert not logging.getLogger("ignite.handlers.early_stopping.EarlyStopping").handlers


# --- the real CLI -------------------------------------------------------------------------------


def test_the_cli_console_has_a_header_one_line_per_epoch_and_the_best_checkpoint(tmp_path, flint):
    out = tmp_path / "run"
    result = flint("run", "lenet", "--test-run", "--epochs", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    stamp = re.compile(r"^\d\d:\d\d:\d\d ")
    assert all(stamp.match(line) for line in result.stderr.splitlines()), result.stderr
    lines = [stamp.sub("", line) for line in result.stderr.splitlines()]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = next((out / "checkpoints").glob("best_checkpoint_*.pt"))
    summary = records[-1]
    epochs = [r for r in records if r["phase"] in ("training", "validation")]
    assert lines[:2] == [
        "lenet on digits: 1,438 training and 359 validation samples; 62,018 parameters (test run: one batch of each per epoch)",
        f"2 epochs on cpu; writing to {out} (every option in config.json, every record in train.log)",
    ]
    keras = re.compile(r"^Epoch ([12])/2  \S+s  loss \S+  accuracy \S+  val_loss \S+  val_accuracy \S+  lr (0\.05|0\.025)$")
    assert [keras.match(line)[1] for line in lines[2:4] if keras.match(line)] == ["1", "2"]
    assert lines[2:4] == [epoch_line(e, 2, epochs[2 * e - 2], epochs[2 * e - 1]) for e in (1, 2)]
    assert lines[4:] == [
        "Completed 2 epochs",
        f"Best epoch {summary['best_epoch']}: val_accuracy {significant(summary['best_value'])}, saved as {best}",
        f"Average epoch {duration(summary['avg_epoch_time'])}, {summary['samples_per_sec']:,.0f} samples/s",
    ]
    assert "{" not in result.stderr and "Engine run" not in result.stderr and "ignite" not in result.stderr

    log = (out / "train.log").read_text()
    assert log.count("flint.records: Run config: {") == 1
    for phase in ("lr", "batch", "training", "validation", "summary"):  # every record, in full as before
        assert log.count(f" {phase}: ") == sum(r["phase"] == phase for r in records), phase
    assert "training: accuracy=0.046875 loss=2.42181 epoch_time=" in log  # LoggingSink's own 6 digits
    for line in lines:  # the console's lines too
        assert f"flint.recipes.app.console: {line}\n" in log
    assert "ignite.engine.engine.Engine: Engine run starting with max_epochs=2." in log
    assert "ignite.engine.engine.Engine: Epoch[1] Complete." in log


def test_quiet_shows_only_errors_and_verbose_adds_ignites_lines(tmp_path, capsys):
    from flint.recipes.app.cli import main

    failing = tmp_path / "failing"
    assert main(["run", "lenet", "--test-run", "--epochs", "2", "--lr", "1e30", "-q", "-o", str(failing)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("flint: error: the training loss became nan or inf"), err  # no header, no warning
    log = (failing / "train.log").read_text()
    assert "flint.recipes.app.console: lenet on digits" in log and " WARNING " in log  # train.log still has everything

    verbose = tmp_path / "verbose"
    assert main(["run", "lenet", "--test-run", "--epochs", "1", "-v", "-o", str(verbose)]) == 0
    err = capsys.readouterr().err
    assert "Engine run starting with max_epochs=1." in err and "Epoch 1/1  " in err
    assert main(["run", "lenet", "-q", "-v"]) == 2
    assert capsys.readouterr().err == "flint: error: argument -v/--verbose: not allowed with argument -q/--quiet\n"
