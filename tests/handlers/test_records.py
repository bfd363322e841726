import json
import logging
import math

import pytest

from flint.handlers import JsonlSink, LoggingSink, RecordStream, TensorBoardSink, WriteError
from tests.full_disk import DEV_FULL, needs_dev_full, small_disk


class FakeWriter:
    """Stands in for the TensorBoard writer (not the thing under test): records add_scalar calls."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_stream_fans_out_to_every_sink_in_order():
    a, b = [], []
    stream = RecordStream([a.append]).add(b.append)
    stream.emit({"phase": "x"})
    assert a == b == [{"phase": "x"}]


def test_jsonl_sink_appends_one_flushed_line_per_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    sink({"phase": "training", "epoch": 1, "loss": 0.5, "lr": [0.1, 0.01]})
    # Readable before close: a crash after this point keeps the line.
    assert json.loads(path.read_text()) == {"phase": "training", "epoch": 1, "loss": 0.5, "lr": [0.1, 0.01]}
    sink.close()
    again = JsonlSink(path)  # a resumed run appends
    again({"phase": "validation", "epoch": 1, "loss": math.nan})
    again.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["loss"] is None


def test_logging_sink_writes_one_readable_line(caplog):
    with caplog.at_level(logging.DEBUG, logger="flint-test"):
        sink = LoggingSink(logging.getLogger("flint-test"))
        sink({"phase": "validation", "epoch": 3, "iteration": 30, "samples": 960, "loss": 0.12345678, "accuracy": 0.97})
        sink({"phase": "lr", "epoch": 3, "lr": [0.1]})
    first, second = caplog.records
    assert first.getMessage() == "[Epoch 3] validation: loss=0.123457 accuracy=0.97"
    assert first.levelno == logging.INFO and second.levelno == logging.DEBUG


def test_tensorboard_sink_tags_and_x_axis():
    writer = FakeWriter()
    sink = TensorBoardSink(writer)
    sink({"phase": "batch", "epoch": 1, "iteration": 50, "samples": 3200, "loss": 0.4, "samples_per_sec": 99.0, "lr": [0.1]})
    sink({"phase": "training", "epoch": 1, "samples": 3500, "accuracy": 0.9, "epoch_time": 2.5, "lr": [0.1, 0.01]})
    sink({"phase": "lr", "epoch": 2, "samples": 3500, "lr": [0.1, 0.01]})
    sink({"phase": "validation", "epoch": 1, "samples": 3500, "accuracy": 0.95})
    sink({"phase": "summary", "status": "completed", "best_accuracy": 0.95})
    assert writer.scalars == [
        ("batch/loss", 0.4, 3200),
        ("batch/samples-per-sec", 99.0, 3200),
        ("training/accuracy", 0.9, 3500),
        ("training/epoch-time", 2.5, 3500),
        ("training/lr/group_0", 0.1, 3500),
        ("training/lr/group_1", 0.01, 3500),
        ("validation/accuracy", 0.95, 3500),
    ]
    RecordStream([sink]).close()
    assert writer.closed


def test_tensorboard_sink_writes_real_event_files(tmp_path):
    from tensorboardX import SummaryWriter

    sink = TensorBoardSink(SummaryWriter(str(tmp_path)))
    sink({"phase": "training", "epoch": 1, "samples": 10, "loss": 0.5})
    sink.close()
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_a_failing_sink_does_not_keep_the_record_from_the_others():
    seen = []

    def full(record):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        RecordStream([full, seen.append]).emit({"phase": "summary", "status": "failed"})
    assert seen == [{"phase": "summary", "status": "failed"}]


@needs_dev_full
def test_jsonl_sink_on_a_full_disk_raises_one_error_naming_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.symlink_to(DEV_FULL)
    sink = JsonlSink(path)
    with pytest.raises(WriteError) as raised:
        sink({"phase": "training", "epoch": 1, "loss": 0.5})
    assert str(raised.value) == f"cannot write metrics file {path}: No space left on device"
    for later in (lambda: sink({"phase": "summary"}), sink.close):  # the same error again, nothing written
        with pytest.raises(WriteError) as again:
            later()
        assert again.value is raised.value


def test_jsonl_sink_cuts_a_line_the_disk_took_only_part_of(tmp_path):
    with small_disk(tmp_path / "disk", "4k") as disk:
        path = disk / "metrics.jsonl"
        sink = JsonlSink(path)
        for epoch in range(1, 36):  # 110 bytes each: 3850 of the disk's 4096
            sink({"phase": "validation", "epoch": epoch, "note": "x" * 68})
        whole = path.read_bytes()
        with pytest.raises(WriteError, match="No space left on device"):
            sink({"phase": "validation", "epoch": 36, "note": "x" * 400})  # about half of it fits
        assert path.read_bytes() == whole  # whole lines only: a resumed run appends after them
        assert [json.loads(line)["epoch"] for line in whole.decode().splitlines()] == list(range(1, 36))
