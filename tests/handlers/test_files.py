import contextlib
import errno
import os
import pickle

import pytest
import torch

from flint.handlers import WriteError, write_text_atomic
from tests.full_disk import DEV_FULL, needs_dev_full


def test_write_error_is_one_line_naming_the_file_and_the_reason():
    error = WriteError.from_error("metrics file", "/run/metrics.jsonl", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert str(error) == "cannot write metrics file /run/metrics.jsonl: No space left on device"
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == "/run/metrics.jsonl"
    again = pickle.loads(pickle.dumps(error))  # e.g. from a worker process
    assert str(again) == str(error) and again.errno == errno.ENOSPC


@needs_dev_full
def test_write_error_finds_the_os_error_behind_torch_save_on_a_full_disk():
    f = open(DEV_FULL, "wb")
    with pytest.raises(RuntimeError, match="unexpected pos") as raised:
        torch.save({"w": torch.zeros(10_000)}, f)
    with contextlib.suppress(OSError):  # its buffer cannot be written either
        f.close()
    error = WriteError.from_error("checkpoint", "/run/checkpoint_1.pt", raised.value)
    assert str(error) == "cannot write checkpoint /run/checkpoint_1.pt: No space left on device"


def test_write_error_without_an_os_error_keeps_the_first_line():
    error = WriteError.from_error("checkpoint", "c.pt", RuntimeError("something odd\nmore detail"))
    assert str(error) == "cannot write checkpoint c.pt: something odd" and error.errno is None


@needs_dev_full
def test_write_text_atomic_on_a_full_disk_keeps_the_old_file(tmp_path):
    path = tmp_path / "progress.json"
    write_text_atomic(path, "old\n", "progress file")
    (tmp_path / ".progress.json.tmp").symlink_to(DEV_FULL)  # the temp file lands on a full disk
    with pytest.raises(WriteError) as raised:
        write_text_atomic(path, "new\n", "progress file")
    assert str(raised.value) == f"cannot write progress file {path}: No space left on device"
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["progress.json"]


def test_write_text_atomic_names_other_reasons_in_words(tmp_path):
    (tmp_path / "config.json").mkdir()  # in the way: the rename fails
    with pytest.raises(WriteError, match=rf"^cannot write config file {tmp_path / 'config.json'}: Is a directory$"):
        write_text_atomic(tmp_path / "config.json", "{}", "config file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
