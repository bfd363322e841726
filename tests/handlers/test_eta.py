import json

import pytest
from ignite.engine import Engine, Events

from flint.handlers import ETA, WriteError
from tests.full_disk import DEV_FULL, needs_dev_full


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_estimates_stay_non_negative_when_an_epoch_runs_slower_than_the_last():
    clock = Clock()
    durations = iter([1.0] * 4 + [5.0] * 4)  # epoch 2 is five times slower (BMXNet's ETA went negative here)
    engine = Engine(lambda e, b: setattr(clock, "t", clock.t + next(durations)))
    eta = ETA(clock=clock).attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(eta.estimate(e)))
    engine.run([0] * 4, max_epochs=2)
    assert all(s["epoch_eta_s"] >= 0 and s["run_eta_s"] >= 0 for s in seen)
    assert [s["epoch_eta_s"] for s in seen[4:]] == [15.0, 10.0, 5.0, 0.0]
    assert seen[3]["run_eta_s"] == pytest.approx(4.0)  # one more epoch at the first's wall time
    assert [s["run_progress"] for s in seen[::2]] == [0.125, 0.375, 0.625, 0.875]


def test_progress_file_is_rewritten_and_ends_finished(tmp_path):
    clock = Clock()
    engine = Engine(lambda e, b: setattr(clock, "t", clock.t + 2.0))
    path = tmp_path / "progress.json"
    snapshots = []
    ETA(path, every=2, clock=clock).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: snapshots.append(json.loads(path.read_text())))
    engine.run([0] * 4, max_epochs=3)
    assert snapshots[0] == {
        "epoch": 1, "epochs": 3, "iteration": 2, "epoch_progress": 0.5, "run_progress": 0.1667,
        "epoch_eta_s": 4.0, "run_eta_s": 20.0, "status": "running",
    }  # fmt: skip
    final = json.loads(path.read_text())
    assert final["status"] == "finished" and final["run_eta_s"] == 0.0 and final["run_progress"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temp file left


def test_rejects_bad_interval():
    with pytest.raises(ValueError, match="every should be a positive integer, got 0"):
        ETA(every=0)


@needs_dev_full
def test_a_progress_file_on_a_full_disk_stops_the_run_and_keeps_its_last_content(tmp_path):
    path = tmp_path / "progress.json"
    engine = Engine(lambda e, b: None)
    ETA(path, every=2).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: (tmp_path / ".progress.json.tmp").symlink_to(DEV_FULL))
    with pytest.raises(WriteError) as raised:
        engine.run([0] * 4, max_epochs=3)
    assert str(raised.value) == f"cannot write progress file {path}: No space left on device"
    assert engine.state.iteration == 6  # the first write after the disk filled: epoch 2, iteration 6
    assert json.loads(path.read_text())["iteration"] == 4  # the last good one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]
