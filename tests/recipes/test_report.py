import json

import pytest

from recipes.cli import main
from recipes.report import summarise, write_report


def run_records(resumed: bool = False) -> list[dict]:
    recs = [{"phase": "lr", "epoch": 1, "iteration": 1, "samples": 0, "lr": [0.1, 0.1]}]
    for epoch, (acc, t) in enumerate([(0.80, 9.0), (0.90, 2.0), (0.85, 4.0)], start=1):
        samples = 100 * epoch
        recs.append({"phase": "batch", "epoch": epoch, "iteration": epoch, "samples": samples - 50, "loss": 1.0 / epoch})
        recs.append({"phase": "training", "epoch": epoch, "samples": samples, "loss": 0.5 / epoch, "accuracy": acc, "epoch_time": t})
        recs.append({"phase": "validation", "epoch": epoch, "samples": samples, "loss": 0.6 / epoch, "accuracy": acc})
        if resumed and epoch == 2:  # an attempt died after epoch 2's records, before its checkpoint
            recs.append({"phase": "summary", "status": "failed"})
            recs.append({"phase": "training", "epoch": 2, "samples": 200, "loss": 0.25, "accuracy": 0.92, "epoch_time": 2.0})
            recs.append({"phase": "validation", "epoch": 2, "samples": 200, "loss": 0.3, "accuracy": 0.93})
    recs.append({"phase": "summary", "status": "completed", "epochs": 3})
    return recs


def test_summary_of_a_run():
    summary = summarise(run_records())
    assert summary == {
        "status": "completed", "epochs": 3, "metric": "accuracy", "best_epoch": 2, "best_value": 0.90,
        "last_value": 0.85, "avg_epoch_time": 3.0, "samples_per_sec": pytest.approx(100 / 3.0),
    }  # fmt: skip


def test_a_resumed_run_counts_each_epoch_once_the_latest_record_winning():
    summary = summarise(run_records(resumed=True))
    assert (summary["best_epoch"], summary["best_value"], summary["status"]) == (2, 0.93, "completed")


def test_regression_runs_keep_the_lowest_loss():
    recs = [{"phase": "validation", "epoch": e, "samples": e, "loss": loss, "mae": 1.0} for e, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]]
    summary = summarise(recs)
    assert (summary["metric"], summary["best_epoch"], summary["best_value"]) == ("loss", 2, 1.0)


def test_report_writes_a_png_and_prints_the_table(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run_records()))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best validation accuracy  0.9000 (epoch 2)" in out and "3.000 s (without the first epoch)" in out
    assert "33 samples/s" in out and f"curves: {tmp_path / 'report.png'}" in out
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_report_without_records_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"flint: error: report: no metrics.jsonl in {tmp_path}\n"


def test_write_report_returns_the_png_path(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run_records(resumed=True)))
    path, table = write_report(tmp_path)
    assert path == tmp_path / "report.png" and path.stat().st_size > 0 and table.startswith("status")
