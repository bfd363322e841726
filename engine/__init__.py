"""Flint's engines: Ignite engines that replicate BMXNet's training step and fire Flint's events."""

from flint.engine.engine import Engine, FlintEvents, TrainEvents, iteration_in_epoch, register_state, registered_states, when
from flint.engine.evaluator import create_evaluator
from flint.engine.rng import RNGState, seed_everything
from flint.engine.sampler import EpochSampler
from flint.engine.trainer import batch_size_of, create_trainer, epoch_loss_total, is_last_update_of_epoch, samples_seen

__all__ = [
    "Engine",
    "EpochSampler",
    "FlintEvents",
    "RNGState",
    "TrainEvents",
    "batch_size_of",
    "create_evaluator",
    "create_trainer",
    "epoch_loss_total",
    "is_last_update_of_epoch",
    "iteration_in_epoch",
    "register_state",
    "registered_states",
    "samples_seen",
    "seed_everything",
    "when",
]
