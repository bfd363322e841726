"""Flint's handlers: one concern each, attachable to any Ignite Engine with ``attach(engine, ...)``."""

from handlers.batch_logger import BatchLogger
from handlers.checkpoint_io import CheckpointError
from handlers.checkpointing import Checkpointing
from handlers.data_order import DataOrder
from handlers.early_stopping import EarlyStopping
from handlers.epoch_metrics import EpochMetrics
from handlers.epoch_timer import EpochTimer
from handlers.eta import ETA
from handlers.files import WriteError, write_text_atomic
from handlers.interrupt_at import InterruptAt
from handlers.log_file import LogFile
from handlers.lr_schedule import LR_MODES, LRSchedule, lr_multiplier
from handlers.loss_guard import LossGuard, NonFiniteLoss
from handlers.lr_tracker import LRTracker, current_lrs
from handlers.meters import BestScore, Throughput, average_excluding_first, remaining_time
from handlers.net_summaries import NetSummaries
from handlers.preemption import Preemption
from handlers.records import JsonlSink, LoggingSink, Record, RecordStream, TensorBoardSink
from handlers.safe_disk_saver import SafeDiskSaver
from handlers.tensorboard_writer import TensorBoardWriter
from handlers.validation import Validation

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
