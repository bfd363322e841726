"""The performance options on CPU: correctness of --compile and --channels-last, --profile, throughput and FLOPs."""

from __future__ import annotations

import json
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from flint.recipes import RECIPES
from flint.recipes.app.cli import main
from flint.recipes.app.config import Config
from flint.recipes.app.perf import ChannelsLast, peak_flops, train_flops_per_sample


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in records(run_dir) if r["phase"] in ("training", "validation")]


def test_train_flops_count_a_linear_layer():
    assert train_flops_per_sample(torch.nn.Linear(10, 5), torch.randn(4, 10)) == 3 * 2 * 10 * 5
    assert peak_flops(torch.device("cpu"), low_precision=True) is None  # no utilisation claimed on CPU


def test_summary_reports_throughput_and_model_tflops(tmp_path):
    assert main(["run", "lenet", "--epochs", "2", "--no-progress", "-o", str(tmp_path)]) == 0
    summary = records(tmp_path)[-1]
    assert summary["samples_per_sec"] > 100 and summary["model_tflops"] > 0
    expected = summary["samples"] / 2 / summary["avg_epoch_time"]  # whole epochs: samples per epoch / its time
    assert summary["samples_per_sec"] == pytest.approx(expected) and "mfu" not in summary


def test_channels_last_trains_the_same_model(tmp_path):
    common = ["run", "lenet", "--dataset", "fake", "--test-run", "--epochs", "2", "--batch-size", "8", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "--channels-last", "-o", str(tmp_path / "nhwc")]) == 0
    assert losses(tmp_path / "nhwc") == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)
    x, _ = ChannelsLast()((torch.zeros(2, 3, 4, 4), torch.zeros(2)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_compile_trains_the_same_model_and_checkpoints_plain_names(tmp_path):
    common = ["run", "ffnn", "--test-run", "--epochs", "2", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "eager")]) == 0
    assert main([*common, "--compile", "-o", str(tmp_path / "compiled")]) == 0
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    state = torch.load(tmp_path / "compiled" / "checkpoints" / "checkpoint_2.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in state["model"])  # loadable into the plain model


def test_profile_logs_each_handlers_cost(tmp_path):
    assert main(["run", "lenet", "--test-run", "--epochs", "2", "--profile", "--no-progress", "-o", str(tmp_path)]) == 0
    log = (tmp_path / "train.log").read_text()
    assert "Handler costs (--profile)" in log and "Per iteration: handlers" in log
    assert "BatchLogger._on_iteration" in log and "Checkpointing._on_save" in log and "EPOCH_REPORT" in log


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_device_sync_between_log_points(tmp_path):
    # Each sync is attributed to the engine and event it happened in. Setup, validation (a nested
    # engine), epoch events, log iterations and each epoch's last iteration may sync; no other
    # training iteration may.
    import sys

    from ignite.engine import Engine, Events

    from flint.engine import FlintEvents
    from flint.recipes.app.train import train

    cfg = Config(recipe="lenet", dataset="digits", epochs=10, log_interval=50, device="cuda", progress=False,
                 output_dir=str(tmp_path), data_on_device=True, amp=True)  # fmt: skip
    iteration_events = {Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED,
                        FlintEvents.ITERATION_REPORT}  # fmt: skip
    hot: list[str] = []

    def attribute(message, category, filename, lineno, file=None, line=None):
        engines, event, frame = [], None, sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Engine) and owner not in engines:
                engines.append(owner)
            if event is None and frame.f_code.co_name == "_fire_event":
                event = frame.f_locals.get("event_name")
            frame = frame.f_back
        if len(engines) != 1 or (event is not None and event not in iteration_events and "OPTIMIZER" not in str(event)):
            return  # setup, teardown, validation, or an epoch-level event
        state = engines[0].state
        if state.iteration % cfg.log_interval and state.iteration % state.epoch_length:
            hot.append(f"iteration {state.iteration}, {event}: {message}\n" + "".join(traceback.format_stack(limit=12)))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = attribute
        torch.cuda.set_sync_debug_mode("warn")
        try:
            assert train(cfg, RECIPES["lenet"]) == "completed"
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert hot == [], hot[0]
    assert records(tmp_path)[-1]["epochs"] == 10  # 230 iterations ran
