"""`flint runs [DIR ...]`: a table of runs from what each recorded, statuses while running and after, damaged files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from flint.engine import FlintEvents
from flint.handlers import NonFiniteLoss
from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.launch_clock import parse_time
from flint.recipes.app.run_table import find_runs, format_table, read_row


def tiny_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def tiny_fit(out: Path, **options) -> dict:
    torch.manual_seed(0)
    data = tiny_data()
    return fit(torch.nn.Linear(3, 2), data, data, output_dir=out, batch_size=16, progress=False, device="cpu", **options)


class TableWhileRunning:
    """A handler that asks `flint runs --json` for the table after the first epoch: its own run is running then."""

    def __init__(self, root: Path, capsys) -> None:
        self.root, self.capsys = root, capsys
        self.rows: list[dict] = []

    def attach(self, trainer) -> None:
        trainer.add_event_handler(FlintEvents.SAVE(once=1), self.snapshot)  # after the epoch's validation

    def snapshot(self, _) -> None:
        self.capsys.readouterr()
        assert main(["runs", str(self.root), "--json"]) == 0
        self.rows = json.loads(self.capsys.readouterr().out)


def nan_loss(y_pred, y):
    return (y_pred.sum() * float("nan")).abs()


def test_statuses_of_a_completed_an_interrupted_a_failed_and_a_running_run(tmp_path, capsys):
    root = tmp_path / "runs"
    tiny_fit(root / "interrupted", epochs=3, interrupt_at=1)
    with pytest.raises(NonFiniteLoss):
        tiny_fit(root / "failed", epochs=2, loss=nan_loss)
    watcher = TableWhileRunning(root, capsys)
    tiny_fit(root / "completed", epochs=2, monitor="loss:min", handlers=[watcher])

    during = {Path(row["dir"]).name: row for row in watcher.rows}
    assert {name: row["status"] for name, row in during.items()} == {"interrupted": "interrupted", "failed": "failed", "completed": "running"}
    running = during["completed"]
    assert running["epochs"] == 1 and running["epochs_total"] == 2 and running["wall_time"] > 0
    assert running["best_metric"] == "loss" and running["best_epoch"] == 1  # from the records so far

    capsys.readouterr()
    assert main(["runs", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(row["dir"]).name for row in rows] == ["interrupted", "failed", "completed"]  # by start time
    by_name = {Path(row["dir"]).name: row for row in rows}
    assert {name: row["status"] for name, row in by_name.items()} == {"interrupted": "interrupted", "failed": "failed", "completed": "completed"}
    summary = [json.loads(line) for line in (root / "completed" / "metrics.jsonl").read_text().splitlines()][-1]
    done = by_name["completed"]
    assert (done["epochs"], done["epochs_total"], done["best_metric"]) == (2, 2, "loss")
    assert (done["best_value"], done["best_epoch"], done["wall_time"]) == (summary["best_value"], summary["best_epoch"], summary["wall_time"])
    assert done["started"] == json.loads((root / "completed" / "config.json").read_text())["started"]
    assert by_name["interrupted"]["epochs"] == 1 and by_name["interrupted"]["epochs_total"] == 3
    assert by_name["failed"]["recipe"].startswith("fit:") and by_name["failed"]["problem"] is None

    assert main(["runs", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "recipe", "status", "epochs", "best", "wall", "started"] and len(table) == 4
    assert table[3].split()[2:7] == ["completed", "2/2", "loss", f"{done['best_value']:#.4g}", "(epoch"]


def test_a_resumed_run_keeps_its_start_and_adds_up_its_launches(tmp_path):
    out = tmp_path / "run"
    tiny_fit(out, epochs=2, interrupt_at=1)
    first = json.loads((out / "config.json").read_text())
    first_wall = read_row(out).wall_time
    tiny_fit(out, epochs=2, resume=True)
    again = json.loads((out / "config.json").read_text())
    assert again["started"] == first["started"] and parse_time(again["launched"]) >= parse_time(first["launched"])
    row = read_row(out)
    summaries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"summary"' in line]
    assert row.status == "completed" and row.wall_time == summaries[-1]["wall_time"] > first_wall == summaries[0]["wall_time"]


def test_damaged_files_make_their_row_say_so_and_the_table_goes_on(tmp_path, capsys):
    root = tmp_path / "runs"
    good, bad_config, bad_metrics, killed = (root / n for n in ("good", "bad-config", "bad-metrics", "nested/killed"))
    for d in (good, bad_config, bad_metrics, killed):
        d.mkdir(parents=True)
    (root / "nested" / "notes.txt").write_text("not a run")
    config = {"recipe": "lenet", "epochs": 5, "started": "2025-01-02T03:04:05+00:00", "launched": "2025-01-02T03:04:05+00:00"}
    summary = {"phase": "summary", "status": "completed", "epochs": 5, "monitor": "accuracy:max", "best_epoch": 4, "best_value": 0.9, "wall_time": 61.0}
    (good / "config.json").write_text(json.dumps(config))
    (good / "metrics.jsonl").write_text(json.dumps(summary) + "\n")
    (bad_config / "config.json").write_text('{"recipe": "lenet", "epo')
    (bad_config / "metrics.jsonl").write_text(json.dumps(summary) + "\n")
    (bad_metrics / "config.json").write_text(json.dumps({**config, "started": "2025-01-01T00:00:00+00:00"}))
    (bad_metrics / "metrics.jsonl").write_text("\x00garbage\n{not json\n")
    validation = [{"phase": "validation", "epoch": e, "loss": 1 / e, "accuracy": a} for e, a in [(1, 0.5), (2, 0.7), (3, 0.6)]]
    (killed / "config.json").write_text(json.dumps({**config, "started": "2025-01-03T00:00:00+00:00"}))
    (killed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation) + '{"phase": "train')  # cut by a kill

    assert [p.relative_to(root).as_posix() for p in find_runs([root])] == ["bad-config", "bad-metrics", "good", "nested/killed"]
    assert main(["runs", str(root), "--json"]) == 0
    rows = {Path(row["dir"]).name: row for row in json.loads(capsys.readouterr().out)}
    assert rows["bad-config"]["problem"].startswith(f"cannot read {bad_config / 'config.json'}") and rows["bad-config"]["status"] == "completed"
    assert rows["bad-metrics"]["problem"] == "metrics.jsonl holds no records" and rows["bad-metrics"]["status"] == "failed"
    assert (rows["good"]["best_value"], rows["good"]["wall_time"], rows["good"]["problem"]) == (0.9, 61.0, None)
    killed_row = rows["killed"]
    assert (killed_row["status"], killed_row["epochs"], killed_row["best_metric"], killed_row["best_epoch"], killed_row["wall_time"]) == (
        "failed", 3, "accuracy", 2, None)  # fmt: skip
    assert list(rows) == ["bad-config", "bad-metrics", "good", "killed"]  # no start time first, then by start time
    assert main(["runs", str(root)]) == 0
    assert "(metrics.jsonl holds no records)" in capsys.readouterr().out


def test_no_runs_and_a_missing_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert capsys.readouterr().err == "flint: error: runs: runs is not a directory\n"
    (tmp_path / "runs").mkdir()
    assert main(["runs"]) == 0 and capsys.readouterr().out == "no runs under runs\n"
    assert main(["runs", "--json"]) == 0 and capsys.readouterr().out == "[]\n"


def test_the_table_imports_no_torch(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "lenet", "epochs": 2}))
    (run / "metrics.jsonl").write_text(json.dumps({"phase": "validation", "epoch": 1, "loss": 0.5}) + "\n")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run([sys.executable, "-m", "flint", "runs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "runs/a" in result.stdout and "failed" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "flint" in imported and not imported & {"torch", "ignite", "numpy", "matplotlib", "mlflow"}, sorted(imported)


def test_format_table_marks_what_is_unknown():
    from flint.recipes.app.run_table import RunRow

    row = RunRow("runs/x", None, "new", None, None, None, None, None, None, None, "no config.json")
    assert format_table([row]).splitlines()[1].split() == ["runs/x", "?", "new", "?/?", "-", "?", "?", "(no", "config.json)"]
