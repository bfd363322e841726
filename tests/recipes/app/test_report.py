import json

import pytest
import torch

from flint.recipes.app.cli import main
from flint.recipes.app.monitor import Monitor
from flint.recipes.app.report import NO_SUMMARY, plot_data, read_records, summarise, write_report


def run_records(resumed: bool = False, lr: tuple[float, float] = (0.1, 0.1), lr_end: tuple[float, float] = (0.01, 0.01)) -> list[dict]:
    recs = [{"phase": "lr", "epoch": 1, "iteration": 1, "samples": 0, "lr": list(lr)}]
    for epoch, (acc, t) in enumerate([(0.80, 9.0), (0.90, 2.0), (0.85, 4.0)], start=1):
        samples = 100 * epoch
        recs.append({"phase": "batch", "epoch": epoch, "iteration": epoch, "samples": samples - 50, "loss": 1.0 / epoch})
        recs.append({"phase": "training", "epoch": epoch, "samples": samples, "loss": 0.5 / epoch, "accuracy": acc, "epoch_time": t, "lr": list(lr_end)})
        recs.append({"phase": "validation", "epoch": epoch, "samples": samples, "loss": 0.6 / epoch, "accuracy": acc})
        if resumed and epoch == 2:  # an attempt died after epoch 2's records, before its checkpoint
            recs.append({"phase": "summary", "status": "failed"})
            recs.append({"phase": "resume", "epoch": 1, "iteration": 1, "samples": 100, "checkpoint": "checkpoint_1.pt"})
            recs.append({"phase": "training", "epoch": 2, "samples": 200, "loss": 0.25, "accuracy": 0.92, "epoch_time": 5.0})
            recs.append({"phase": "validation", "epoch": 2, "samples": 200, "loss": 0.3, "accuracy": 0.93})
    recs.append({"phase": "summary", "status": "completed", "epochs": 3})
    return recs


def write_run(run_dir, records, config=None, extra_lines=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def test_summary_of_a_run():
    summary = summarise(run_records())
    assert summary == {
        "status": "completed", "epochs": 3, "metric": "accuracy", "mode": "max", "best_epoch": 2, "best_value": 0.90,
        "last_value": 0.85, "resumes": [], "avg_epoch_time": 3.0, "samples_per_sec": pytest.approx(100 / 3.0),
        "timing": "without the first epoch", "throughput": "training",
    }  # fmt: skip


def test_a_resumed_run_counts_each_epoch_once_the_latest_record_winning_and_times_past_each_launchs_first():
    summary = summarise(run_records(resumed=True))
    assert (summary["best_epoch"], summary["best_value"], summary["status"]) == (2, 0.93, "completed")
    assert summary["resumes"] == [(1, 1)]
    # epoch 1 opened the first launch and the rewritten epoch 2 the second: only epoch 3 is steady
    assert (summary["avg_epoch_time"], summary["timing"]) == (4.0, "without the first epoch of each of the 2 launches")
    assert summary["samples_per_sec"] == pytest.approx(100 / 4.0)


def test_regression_runs_keep_the_lowest_loss():
    recs = [{"phase": "validation", "epoch": e, "samples": e, "loss": loss, "mae": 1.0} for e, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]]
    summary = summarise(recs)
    assert (summary["metric"], summary["best_epoch"], summary["best_value"]) == ("loss", 2, 1.0)


def test_a_monitor_in_config_json_decides_the_best_epoch(tmp_path, capsys):
    run = write_run(tmp_path / "run", run_records(), config={"recipe": "lenet", "monitor": "loss:min"})
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "best validation loss  0.2000 (epoch 3)" in out  # 0.6 / 3: the lowest validation loss
    assert summarise(run_records(), Monitor("accuracy", "min"))["best_epoch"] == 1


def test_a_one_epoch_run_and_compiled_runs_label_their_timing_and_never_show_a_compile_rate():
    one = [{"phase": "training", "epoch": 1, "samples": 64, "epoch_time": 0.5}, {"phase": "summary", "status": "completed"}]
    summary = summarise(one)
    assert (summary["avg_epoch_time"], summary["samples_per_sec"]) == (0.5, 128.0)
    assert summary["timing"] == "first epoch of a launch: includes warm-up"
    compiled = summarise(one, compiled=True)  # 64 samples over a 30 s compile is no throughput
    assert compiled["samples_per_sec"] is None and compiled["throughput"] == "every timed epoch includes the torch.compile"
    assert compiled["timing"] == "first epoch of a launch: includes the torch.compile"
    # a compiled run resumed for its second epoch: both epochs open a launch, both include the compile
    resumed = [*one, {"phase": "resume", "epoch": 1, "iteration": 1, "samples": 64}, {"phase": "training", "epoch": 2, "samples": 128, "epoch_time": 20.0}]
    assert summarise(resumed, compiled=True)["samples_per_sec"] is None
    longer = [*resumed, {"phase": "training", "epoch": 3, "samples": 192, "epoch_time": 0.25}]
    assert summarise(longer, compiled=True)["samples_per_sec"] == 256.0  # epoch 3 alone is steady


def test_report_writes_a_png_and_prints_the_table(tmp_path, capsys):
    write_run(tmp_path, run_records())
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best validation accuracy  0.9000 (epoch 2)" in out and "3.000 s (without the first epoch)" in out
    assert "33 samples/s" in out and f"curves: {tmp_path / 'report.png'}" in out
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_the_plot_marks_the_best_epoch_and_resumes_and_has_an_epoch_axis():
    plot = plot_data(run_records(resumed=True), summarise(run_records(resumed=True)))
    assert [p.title for p in plot.panels] == ["loss", "accuracy", "learning rate"]
    assert plot.epoch_ends == [(1, 100), (2, 200), (3, 300)] and plot.x_label == "samples seen"
    assert plot.best_x == 200 and plot.resume_xs == [100]
    (lr_line,) = plot.panels[2].lines  # two param groups with the same LR: one line
    assert lr_line[0] == "param groups 0, 1" and lr_line[1] == [(0, 0.1), (100, 0.01), (200, 0.01), (300, 0.01)]


def test_different_lr_groups_get_a_line_each_and_a_constant_lr_gets_no_panel(tmp_path, capsys):
    plot = plot_data(run_records(lr=(0.1, 0.01), lr_end=(0.05, 0.005)), summarise(run_records()))
    assert [label for label, _ in plot.panels[-1].lines] == ["group 0", "group 1"]
    constant = run_records(lr=(0.1, 0.02), lr_end=(0.1, 0.02))
    plot = plot_data(constant, summarise(constant))
    assert [p.title for p in plot.panels] == ["loss", "accuracy"] and plot.constant_lr == [0.1, 0.02]
    assert main(["report", str(write_run(tmp_path, constant))]) == 0
    assert "learning rate             0.1, 0.02 (constant)" in capsys.readouterr().out


def test_malformed_lines_are_skipped_with_one_warning_each_naming_file_and_line(tmp_path, flint):
    garbage = ['{"phase": "training", "epoch": 4, "samp', "\x00\x00garbage", "[1, 2]", '{"phase": "validation", "epoch": "x"}']
    run = write_run(tmp_path / "run", run_records(), extra_lines=garbage)
    path = run / "metrics.jsonl"
    n = len(run_records())
    result = flint("report", str(run))
    assert result.returncode == 0, result.stderr
    # (a first matplotlib import in a fresh environment may add its own "building the font cache" line)
    warnings = [line for line in result.stderr.splitlines() if "metrics.jsonl" in line]
    assert len(warnings) == 4 and all(line.count("skipped") == 1 for line in warnings), result.stderr
    for number, line in zip(range(n + 1, n + 5), warnings):
        assert f"{path} line {number} skipped: " in line
    assert "not valid JSON" in warnings[0] and "a JSON list, not a record object" in warnings[2]
    assert "'epoch' is 'x', not an integer" in warnings[3]
    assert "best validation accuracy  0.9000 (epoch 2)" in result.stdout and "curves:" in result.stdout
    assert (run / "report.png").stat().st_size > 20_000


def test_report_without_records_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"flint: error: report: no metrics.jsonl in {tmp_path}\n"
    (tmp_path / "metrics.jsonl").write_text("\n")
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"flint: error: report: {tmp_path / 'metrics.jsonl'} holds no records\n"


def test_write_report_returns_the_png_path(tmp_path):
    write_run(tmp_path, run_records(resumed=True))
    path, table = write_report(tmp_path)
    assert path == tmp_path / "report.png" and path.stat().st_size > 0 and table.startswith("status")
    assert "resumed                   at iteration 1 (epoch 1)" in table


def test_a_loop_of_your_own_with_a_custom_phase_and_no_summary(tmp_path, capsys, batches, model):
    """A loop composed from Flint's parts, writing metrics.jsonl through JsonlSink: no config.json, no summary."""
    from ignite.engine import Events
    from ignite.metrics import Accuracy

    from flint.engine import create_evaluator, create_trainer
    from flint.handlers import BatchLogger, EpochMetrics, EpochTimer, JsonlSink, RecordStream, Validation

    stream = RecordStream([JsonlSink(tmp_path / "metrics.jsonl")])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    timer = EpochTimer().attach(trainer)
    EpochMetrics({"accuracy": Accuracy()}, stream, extra=lambda e: {"epoch_time": timer.last}).attach(trainer)
    BatchLogger(stream, every=2).attach(trainer)
    evaluator = create_evaluator(model)
    Validation(evaluator, batches[:2]).attach(trainer)
    EpochMetrics({"accuracy": Accuracy()}, stream, "validation", trainer=trainer).attach(evaluator)

    @trainer.on(Events.EPOCH_COMPLETED)
    def weight_norm(engine):
        norm = sum(p.detach().norm() ** 2 for p in model.parameters()) ** 0.5
        stream.emit({"phase": "weights", "epoch": engine.state.epoch, "norm": float(norm)})

    trainer.run(batches, max_epochs=3)
    stream.close()

    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"status                    {NO_SUMMARY}" in out and "best validation accuracy" in out
    records = read_records(tmp_path)
    plot = plot_data(records, summarise(records))
    weights = next(p for p in plot.panels if p.title == "weights")
    (label, points), = weights.lines
    assert label == "norm" and len(points) == 3
    assert [x for x, _ in points] == [x for _, x in plot.epoch_ends]  # epoch-only records sit at their epoch's end
