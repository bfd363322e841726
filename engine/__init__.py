"""Flint's engines: Ignite engines that replicate BMXNet's training step and fire Flint's events."""

from flint.engine.engine import Engine, FlintEvents, TrainEvents, iteration_in_epoch, register_state, registered_states, when
from flint.engine.evaluator import create_evaluator
from flint.engine.progress import TrainProgress, progress
from flint.engine.rng import RNGState, seed_everything
from flint.engine.sampler import EpochSampler
from flint.engine.trainer import batch_size_of, create_trainer, is_last_update_of_epoch, prepare_batch, samples_seen

__all__ = [
    "Engine",
    "EpochSampler",
    "FlintEvents",
    "RNGState",
    "TrainEvents",
    "TrainProgress",
    "batch_size_of",
    "create_evaluator",
    "create_trainer",
    "is_last_update_of_epoch",
    "iteration_in_epoch",
    "prepare_batch",
    "progress",
    "register_state",
    "registered_states",
    "samples_seen",
    "seed_everything",
    "when",
]
