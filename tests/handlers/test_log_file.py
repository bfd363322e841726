import logging

import pytest

from flint.handlers import LogFile, LoggingSink, WriteError
from tests.full_disk import DEV_FULL, needs_dev_full


@pytest.fixture
def log():
    logger = logging.getLogger("test-log-file")
    logger.propagate, logger.level = False, logging.DEBUG
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_writes_lines_like_a_file_handler(tmp_path, log):
    handler = LogFile(tmp_path / "train.log")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.info("one")
    log.debug("two")
    assert (tmp_path / "train.log").read_text() == "INFO one\nDEBUG two\n" and handler.error is None


@needs_dev_full
def test_a_full_disk_is_kept_once_printed_nowhere_and_raised_by_the_logging_sink(tmp_path, log, capfd):
    (tmp_path / "train.log").symlink_to(DEV_FULL)
    handler = LogFile(tmp_path / "train.log")
    log.addHandler(handler)
    sink = LoggingSink(log)
    log.warning("not written")
    log.warning("nor this")  # dropped: no second error, no reopening
    error = handler.error
    assert str(error) == f"cannot write log file {tmp_path / 'train.log'}: No space left on device"
    assert handler.stream is None
    assert capfd.readouterr().err == ""  # logging would print "--- Logging error ---" and a traceback per line
    with pytest.raises(WriteError) as raised:
        sink({"phase": "validation", "epoch": 1, "loss": 0.5})
    assert raised.value is error
    with pytest.raises(WriteError):
        sink.close()


def test_a_sink_whose_logger_reaches_no_failed_file_does_not_raise(tmp_path, log):
    log.addHandler(LogFile(tmp_path / "train.log"))
    sink = LoggingSink(log)
    sink({"phase": "validation", "epoch": 1, "loss": 0.5})
    sink.close()
    assert (tmp_path / "train.log").read_text() == "[Epoch 1] validation: loss=0.5\n"


def test_an_unwritable_log_file_fails_when_made(tmp_path):
    (tmp_path / "train.log").mkdir()
    with pytest.raises(WriteError, match=rf"^cannot write log file {tmp_path / 'train.log'}: Is a directory$"):
        LogFile(tmp_path / "train.log")

