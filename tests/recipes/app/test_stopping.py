"""Stop signals of a process: before training, during it, forwarded, and ignored once the outcome is settled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest
from ignite.engine import Engine, Events

from flint.handlers import Preemption
from flint.recipes.app.stopping import EXIT_INTERRUPTED, EXIT_OK, Stops, StopSignal, exit_status
from tests.recipes.app.test_resilience import start_flint


@pytest.fixture
def stops():
    stops = Stops()
    stops.install()
    yield stops
    stops.uninstall()


def test_before_training_a_signal_ends_the_launch_once(stops):
    with pytest.raises(StopSignal, match="stopped by SIGTERM before training started") as error:
        os.kill(os.getpid(), signal.SIGTERM)
    assert error.value.signum == signal.SIGTERM
    os.kill(os.getpid(), signal.SIGTERM)  # the stop is being reported: nothing may cut that short
    os.kill(os.getpid(), signal.SIGINT)


def test_during_training_signals_go_to_the_preemption_and_a_second_aborts_once(stops):
    preemption = Preemption(grace=0.0)
    trainer = Engine(lambda e, b: None)
    preemption.attach(trainer)
    trainer.fire_event(Events.STARTED)  # the trainer started: a second signal aborts
    with stops.training(preemption):
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="received again"):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # after the abort: ignored


def test_once_settled_no_signal_reaches_the_process_until_the_handlers_are_given_back(stops):
    stops.settle()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    stops.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_a_stop_routing_the_block_installs_and_gives_back():
    stops = Stops()
    before = signal.getsignal(signal.SIGTERM)
    preemption = Preemption()
    with stops.training(preemption):
        assert signal.getsignal(signal.SIGTERM) == stops._handle
        os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.requested == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is before


def test_the_exit_status_of_a_summary():
    assert exit_status({"status": "interrupted"}) == EXIT_INTERRUPTED == 3
    assert exit_status({"status": "completed"}) == EXIT_OK == 0


@pytest.mark.parametrize("extra,status", [((), 0), (("--interrupt-at", "1"), 3)], ids=["completed", "interrupted"])
def test_from_the_summary_to_the_exit_no_signal_changes_the_exit_status(tmp_path, extra, status):
    out = tmp_path / "run"
    proc = start_flint("run", "lenet", "--test-run", "--epochs", "2", "--no-progress", "-o", str(out), *extra)
    metrics, sent = out / "metrics.jsonl", 0
    while proc.poll() is None and not (metrics.exists() and '"phase": "summary"' in metrics.read_text()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.01)
    while proc.poll() is None:  # SIGTERM every 50 ms, from the moment the summary is written until the process is gone
        proc.send_signal(signal.SIGTERM)
        sent += 1
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    _, err = proc.communicate()
    assert proc.returncode == status, err
    assert sent >= 1, "the process was gone before the first signal: nothing was shown"
    assert "Traceback" not in err and "flint: error" not in err
