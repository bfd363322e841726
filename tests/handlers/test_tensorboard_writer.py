import errno
import inspect
import os
import struct
import threading
from pathlib import Path

import pytest
import torch
from tensorboardX import SummaryWriter, record_writer
from tensorboardX.proto import event_pb2
from tensorboardX.writer import FileWriter

from flint.handlers import TensorBoardSink, TensorBoardWriter, WriteError
from tests.full_disk import DEV_FULL, needs_dev_full


def read_events(path: Path) -> list[event_pb2.Event]:
    """Parse a TFRecord events file, checking every length and CRC as TensorBoard does."""
    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[at + 8 : at + 12])[0] == record_writer.masked_crc32c(header)
        body = data[at + 12 : at + 12 + length]
        assert struct.unpack("I", data[at + 12 + length : at + 16 + length])[0] == record_writer.masked_crc32c(body)
        events.append(event_pb2.Event.FromString(body))
        at += 16 + length
    return events


def test_writes_an_events_file_tensorboard_reads_without_a_thread(tmp_path):
    threads = threading.active_count()
    writer = TensorBoardWriter(tmp_path)
    sink = TensorBoardSink(writer)
    assert threading.active_count() == threads  # tensorboardX's SummaryWriter starts one here
    sink({"phase": "training", "epoch": 1, "samples": 64, "loss": 0.5, "accuracy": 0.75})
    writer.add_histogram("weights/w", torch.arange(10.0), 64)
    path = Path(writer.path)
    sink.close()
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    scalars = [(v.tag, v.simple_value, e.step) for e in events for v in e.summary.value if v.HasField("simple_value")]
    assert scalars == [("training/loss", 0.5, 64), ("training/accuracy", 0.75, 64)]
    assert [v.tag for e in events for v in e.summary.value if v.HasField("histo")] == ["weights/w"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.name.startswith("events.out.tfevents.")


class SmallDisk:
    """A fault-injecting file: takes ``capacity`` bytes, then every write raises OSError(ENOSPC)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.written = capacity, 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Opener:
    """tensorboardX's hook for other storage (``register_writer_factory``): files for ``<prefix>://`` paths."""

    def __init__(self, open_file) -> None:
        self.open = open_file

    def directory_check(self, path: str) -> None:
        pass


def test_a_write_error_is_raised_by_the_call_naming_the_events_file(monkeypatch):
    monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "small", Opener(lambda path: SmallDisk(200)))
    writer = TensorBoardWriter("small://run")
    sink = TensorBoardSink(writer)
    sink({"phase": "batch", "samples": 32, "loss": 0.5})  # fits
    with pytest.raises(WriteError) as raised:
        for step in range(64, 1000, 32):  # about 50 bytes each: the disk is full within a few
            sink({"phase": "batch", "samples": step, "loss": 0.5})
    error = raised.value
    assert str(error) == f"cannot write TensorBoard events file {writer.path}: No space left on device"
    assert error.errno == errno.ENOSPC and writer.path.startswith("small://run/events.out.tfevents.")
    for later in (lambda: writer.add_scalar("x", 1.0, 1), writer.flush, sink.close):  # the same error, never a hang
        with pytest.raises(WriteError) as again:
            later()
        assert again.value is error


@needs_dev_full
def test_an_events_file_that_cannot_be_written_fails_at_once(monkeypatch):
    monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "full", Opener(lambda path: open(DEV_FULL, "wb")))
    message = r"^cannot write TensorBoard events file full://run/events\.out\.tfevents\.\S+: No space left on device$"
    with pytest.raises(WriteError, match=message):
        TensorBoardWriter("full://run")


def test_the_tensorboardX_internals_it_relies_on_are_there(tmp_path):
    # docs/engine.md, "Private surfaces": SummaryWriter gets its FileWriter from _get_file_writer(), which
    # sets file_writer and all_writers; a FileWriter's state is event_writer and _default_metadata, which
    # TensorBoardWriter's FileWriter sets itself instead of calling FileWriter.__init__ (it starts the thread).
    assert list(inspect.signature(SummaryWriter._get_file_writer).parameters) == ["self"]
    theirs = SummaryWriter(str(tmp_path / "theirs"))
    try:
        before = dict(vars(theirs))
        theirs.file_writer.close()
        theirs.file_writer = None
        made = theirs._get_file_writer()  # what the real one sets
        assert {k for k, v in vars(theirs).items() if v is not before.get(k)} == {"file_writer", "all_writers"}
        assert set(vars(made)) == {"event_writer", "_default_metadata"}
    finally:
        theirs.close()
    ours = TensorBoardWriter(tmp_path / "ours")
    assert isinstance(ours.file_writer, FileWriter) and set(vars(ours.file_writer)) == set(vars(made))
    assert ours.all_writers == {str(tmp_path / "ours"): ours.file_writer}
    ours.add_text("note", "every add_* method is SummaryWriter's", 1)
    path = Path(ours.path)
    ours.close()
    assert [v.tag for e in read_events(path) for v in e.summary.value] == ["note/text_summary"]
