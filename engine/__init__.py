"""Flint's engines: an Ignite trainer and evaluator that replicate BMXNet's training step."""

from engine.evaluator import create_evaluator
from engine.rng import RNGState, seed_everything
from engine.sampler import EpochSampler
from engine.trainer import (
    TrainEvents,
    batch_size_of,
    create_trainer,
    epoch_loss_total,
    is_last_update_of_epoch,
    iteration_in_epoch,
    samples_seen,
)

__all__ = [
    "EpochSampler",
    "RNGState",
    "TrainEvents",
    "batch_size_of",
    "create_evaluator",
    "create_trainer",
    "epoch_loss_total",
    "is_last_update_of_epoch",
    "iteration_in_epoch",
    "samples_seen",
    "seed_everything",
]
