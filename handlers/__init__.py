"""Flint's handlers: one concern each, attachable to any Ignite Engine with ``attach(engine, ...)``."""

from flint.handlers.batch_logger import BatchLogger
from flint.handlers.checkpoint_io import CheckpointError
from flint.handlers.checkpointing import Checkpointing
from flint.handlers.data_order import DataOrder
from flint.handlers.early_stopping import EarlyStopping
from flint.handlers.epoch_metrics import EpochMetrics
from flint.handlers.epoch_timer import EpochTimer
from flint.handlers.eta import ETA
from flint.handlers.files import WriteError, write_text_atomic
from flint.handlers.interrupt_at import InterruptAt
from flint.handlers.log_file import LogFile
from flint.handlers.lr_schedule import LR_MODES, LRSchedule, lr_multiplier
from flint.handlers.loss_guard import LossGuard, NonFiniteLoss
from flint.handlers.lr_tracker import LRTracker, current_lrs
from flint.handlers.meters import BestScore, Throughput, average_excluding_first, remaining_time
from flint.handlers.metric_guard import MetricGuard
from flint.handlers.net_summaries import NetSummaries
from flint.handlers.preemption import Preemption
from flint.handlers.records import JsonlSink, LoggingSink, Record, RecordStream, TensorBoardSink
from flint.handlers.safe_disk_saver import SafeDiskSaver
from flint.handlers.tensorboard_writer import TensorBoardWriter
from flint.handlers.validation import Validation

__all__ = [
    "ETA",
    "BatchLogger",
    "BestScore",
    "CheckpointError",
    "Checkpointing",
    "DataOrder",
    "EarlyStopping",
    "EpochMetrics",
    "EpochTimer",
    "InterruptAt",
    "JsonlSink",
    "LRSchedule",
    "LRTracker",
    "LogFile",
    "LossGuard",
    "LR_MODES",
    "LoggingSink",
    "MetricGuard",
    "NetSummaries",
    "NonFiniteLoss",
    "Preemption",
    "Record",
    "RecordStream",
    "SafeDiskSaver",
    "TensorBoardSink",
    "TensorBoardWriter",
    "Throughput",
    "Validation",
    "WriteError",
    "average_excluding_first",
    "current_lrs",
    "lr_multiplier",
    "remaining_time",
    "write_text_atomic",
]
