"""`flint report RUN RUN ...`: the runs' curves overlaid in one figure and a table on stdout; one run: its own report."""

from __future__ import annotations

import json
from pathlib import Path

from flint.recipes.app.cli import main
from flint.recipes.app.compare import comparison_curves, run_names


def write_run(run: Path, losses: list[float], accuracies: list[float], started: str) -> list[dict]:
    """A run directory as `flint run` leaves it: config.json, and metrics.jsonl with an attempt that died and was resumed."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "lenet", "epochs": len(losses), "started": started}))
    records = [{"phase": "training", "epoch": 1, "loss": 9.0, "accuracy": 0.0, "epoch_time": 1.0, "lr": [0.1]}]  # superseded
    for epoch, (loss, accuracy) in enumerate(zip(losses, accuracies), start=1):
        records += [
            {"phase": "batch", "epoch": epoch, "iteration": epoch * 10, "loss": loss + 0.5},
            {"phase": "training", "epoch": epoch, "loss": loss + 0.1, "accuracy": accuracy - 0.1, "epoch_time": 1.0, "lr": [0.1]},
            {"phase": "validation", "epoch": epoch, "loss": loss, "accuracy": accuracy},
        ]
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    records.append({"phase": "summary", "status": "completed", "epochs": len(losses), "monitor": "accuracy:max",
                    "best_epoch": best + 1, "best_value": accuracies[best], "wall_time": 12.5})  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_several_runs_one_figure_of_their_curves_and_a_table(tmp_path, capsys):
    a = write_run(tmp_path / "runs" / "a", [0.9, 0.5, 0.4], [0.6, 0.8, 0.85], "2025-01-02T10:00:00+00:00")
    write_run(tmp_path / "runs" / "b", [0.8, 0.6], [0.7, 0.75], "2025-01-01T10:00:00+00:00")
    out = tmp_path / "both.png"
    assert main(["report", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and lines[-1] == f"curves: {out}"
    assert [line.split()[0] for line in lines[1:3]] == [str(tmp_path / "runs" / "b"), str(tmp_path / "runs" / "a")]  # by start time
    assert lines[2].split()[2:6] == ["completed", "3/3", "accuracy", "0.8500"]

    curves = comparison_curves({"a": a})
    validation = [r for r in a if r["phase"] == "validation"]
    assert list(curves) == ["loss", "accuracy"]
    by_phase = {c.phase: c.points for c in curves["accuracy"]}
    assert by_phase["validation"] == [(r["epoch"], r["accuracy"]) for r in validation]
    assert by_phase["training"][0] == (1, 0.5)  # epoch 1's last training record, not the attempt that died


def test_the_comparison_goes_beside_the_runs_by_default(tmp_path, capsys):
    for name in ("a", "b"):
        write_run(tmp_path / "runs" / name, [0.5], [0.5], "2025-01-01T10:00:00+00:00")
    assert main(["report", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")]) == 0
    assert (tmp_path / "runs" / "compare.png").is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"curves: {tmp_path / 'runs' / 'compare.png'}"


def test_one_run_is_its_own_report_written_where_asked(tmp_path, capsys):
    write_run(tmp_path / "a", [0.9, 0.5], [0.6, 0.8], "2025-01-01T10:00:00+00:00")
    assert main(["report", str(tmp_path / "a"), "-o", str(tmp_path / "mine.png")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "mine.png").is_file() and not (tmp_path / "a" / "report.png").exists()
    assert "best validation accuracy  0.8000 (epoch 2)" in out


def test_a_run_without_records_is_refused_in_one_line(tmp_path, capsys):
    write_run(tmp_path / "a", [0.5], [0.5], "2025-01-01T10:00:00+00:00")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"flint: error: report: no metrics.jsonl in {tmp_path / 'empty'}\n"
    assert not list(tmp_path.glob("*.png"))


def test_legend_names():
    assert run_names(["runs/lr-0.1", "runs/lr-0.2"]) == ["lr-0.1", "lr-0.2"]
    assert run_names(["a/run", "b/run"]) == ["a/run", "b/run"]
