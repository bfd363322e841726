"""MLflow tracking (`--mlflow [URI]`, `fit(mlflow=URI)`) against a real SQLite store, read back with MlflowClient."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from flint.handlers import NonFiniteLoss
from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.rundir import RunDir
from flint.recipes.app.tracking import MlflowSink

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A fresh SQLite store, made once: MLflow's migrations take seconds; each test gets a copy. Its default
    experiment keeps artifacts in mlruns/ of the directory the store was made in: this one."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path.parent)
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store, tmp_path, monkeypatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tracked(run: Path) -> tuple[object, str]:
    saved = json.loads((run / "mlflow.json").read_text())
    return mlflow.MlflowClient(saved["tracking_uri"]), saved["run_id"]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def tiny_fit(out: Path, **options) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    torch.manual_seed(0)
    return fit(torch.nn.Linear(3, 2), data, data, output_dir=out, batch_size=16, progress=False, device="cpu", **options)


def test_fit_tracks_options_metrics_artifacts_and_the_end(tmp_path, store):
    out = tmp_path / "run"
    tiny_fit(out, epochs=3, log_interval=1, mlflow=store)
    client, run_id = tracked(out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run" and run.data.tags["flint.run_dir"] == str(out)
    config = json.loads((out / "config.json").read_text())
    options = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items() if k not in ("fingerprint", "metadata", "started", "launched", "resume", "mlflow")}
    assert run.data.params == options

    recs = records(out)
    for phase in ("training", "validation"):
        epochs = [r for r in recs if r["phase"] == phase]
        for field in ("loss", "accuracy"):  # the same numbers as metrics.jsonl, the epoch as the step
            assert history(client, run_id, f"{phase}/{field}") == [(r["epoch"], r[field]) for r in epochs], (phase, field)
    batches = [r for r in recs if r["phase"] == "batch"]
    assert len(batches) == 9 and history(client, run_id, "batch/loss") == [(r["iteration"], r["loss"]) for r in batches]

    best = next((out / "checkpoints").glob("best_checkpoint_*.pt"))
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.json", "checkpoints"}
    assert str(Path(__file__).resolve().parents[3]) not in run.info.artifact_uri  # the store's directory, not the repository
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == [f"checkpoints/{best.name}"]


def test_an_interrupt_is_killed_and_the_resumed_run_continues_the_same_mlflow_run(tmp_path, store):
    out = tmp_path / "run"
    assert tiny_fit(out, epochs=3, interrupt_at=1, mlflow=store)["status"] == "interrupted"
    client, run_id = tracked(out)
    assert client.get_run(run_id).info.status == "KILLED"
    tiny_fit(out, epochs=3, resume=True, mlflow=True)  # MLflow's default store: the run's own, kept in mlflow.json
    assert tracked(out)[1] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["flint.resumed_with"] == "interrupt_at=null"
    validation = [r for r in records(out) if r["phase"] == "validation"]
    assert history(client, run_id, "validation/loss") == [(r["epoch"], r["loss"]) for r in validation] and len(validation) == 3
    assert len(client.search_runs(["0"])) == 1


def test_a_resumed_run_whose_mlflow_run_is_gone_starts_a_new_one(tmp_path, store, caplog):
    out = tmp_path / "run"
    tiny_fit(out, epochs=2, interrupt_at=1, mlflow=store)
    (out / "mlflow.json").write_text(json.dumps({"tracking_uri": store, "run_id": "0" * 32}))
    with caplog.at_level(logging.WARNING):
        tiny_fit(out, epochs=2, resume=True, mlflow=store)
    client, run_id = tracked(out)
    assert run_id != "0" * 32 and client.get_run(run_id).info.status == "FINISHED"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [f"MLflow run {'0' * 32} is not in {store}: starting a new one"]


def test_a_failed_run_is_failed(tmp_path, store):
    def nan_loss(y_pred, y):
        return (y_pred.sum() * float("nan")).abs()

    with pytest.raises(NonFiniteLoss):
        tiny_fit(tmp_path / "run", epochs=2, loss=nan_loss, mlflow=store)
    client, run_id = tracked(tmp_path / "run")
    assert client.get_run(run_id).info.status == "FAILED"


def test_a_store_that_cannot_be_reached_is_one_warning_and_the_run_goes_on(tmp_path, caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        summary = tiny_fit(out, epochs=2, mlflow=f"http://127.0.0.1:{port}")
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith(("flint", "mlflow", "urllib3")) and r.levelno >= logging.WARNING]
    assert warnings == [f"MLflow at http://127.0.0.1:{port} cannot be reached ([Errno 111] Connection refused); the run is not tracked "
                        f"there, every record is in {out / 'metrics.jsonl'}"]  # fmt: skip
    assert summary["status"] == "completed" and [r["epoch"] for r in records(out) if r["phase"] == "validation"] == [1, 2]
    assert not (out / "mlflow.json").exists()


def test_a_store_that_goes_away_stops_the_sink_after_one_warning(tmp_path, store, caplog):
    sink = MlflowSink(mlflow.MlflowClient(store), "no-such-run", RunDir(tmp_path))
    with caplog.at_level(logging.WARNING):
        sink({"phase": "validation", "epoch": 1, "loss": 0.5})
        sink({"phase": "validation", "epoch": 2, "loss": 0.4})
        sink.close()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1 and sink.client is None
    assert caplog.records[-1].getMessage().startswith("MLflow tracking stopped: ")


def test_the_cli_flag_alone_tracks_in_mlflow_db_here(tmp_path, store, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # MLflow's default store: mlflow.db in the current directory
    assert main(["run", "lenet", "--test-run", "--epochs", "1", "--mlflow", "-q", "-o", "runs/a"]) == 0
    client, run_id = tracked(tmp_path / "runs" / "a")
    assert json.loads((tmp_path / "runs" / "a" / "mlflow.json").read_text())["tracking_uri"] == store
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["recipe"] == "lenet" and capsys.readouterr().err == ""


@pytest.mark.slow
def test_only_rank_0_tracks_under_data_parallel(tmp_path, store):
    out = tmp_path / "run"
    tiny_fit(out, epochs=2, nproc_per_node=2, mlflow=store)
    client, run_id = tracked(out)
    assert len(client.search_runs(["0"])) == 1 and client.get_run(run_id).info.status == "FINISHED"
    validation = [r for r in records(out) if r["phase"] == "validation"]
    assert history(client, run_id, "validation/accuracy") == [(r["epoch"], r["accuracy"]) for r in validation]
