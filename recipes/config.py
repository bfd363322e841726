"""The options of a training run, as one dataclass; the resolved copy is saved as ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Config", "DEVICES", "UsageError", "check_global_batch"]

DEVICES = ("auto", "cpu", "cuda")


class UsageError(ValueError):
    """A bad option or option combination; the CLI prints it in one line and exits 2."""


def check_global_batch(batch_size: int, workers: int) -> None:
    """``--batch-size`` is global: each of ``workers`` data-parallel workers takes an equal share."""
    if batch_size % workers:
        raise UsageError(f"--batch-size {batch_size} is global: it must divide among {workers} workers")


@dataclass
class Config:
    recipe: str  # recipe name (`flint list` shows them)
    dataset: str = ""  # dataset name; "" = the recipe's default
    data_dir: str = "data"  # where mnist, fashion-mnist and cifar10 are read from (and downloaded to)
    download: bool = False  # fetch a missing dataset into data_dir
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    data_on_device: bool = False  # hold the whole dataset as tensors on the device (small datasets)
    epochs: int = 10  # training epochs
    batch_size: int = 64  # samples per batch; one optimizer step sees batch_size * update_cycle
    lr: float = 0.1  # base learning rate
    optimizer: str = "sgd"  # one of recipes.optim.OPTIMIZERS
    momentum: float = 0.9  # SGD and RMSprop momentum
    nesterov: bool = False  # Nesterov momentum (SGD)
    wd: float = 1e-4  # weight decay, on weights only: not on biases and normalisation parameters
    wd_all: bool = False  # weight decay on every parameter, biases and BatchNorm too
    loss: str = ""  # one of recipes.optim.LOSSES[task]; "" = cross-entropy for classification, mse for regression
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    lr_mult: dict[str, float] = field(default_factory=dict)  # name substring -> LR factor, one param group each
    log_interval: int = 50  # iterations between batch records
    update_cycle: int = 1  # batches per optimizer step (gradient accumulation)
    lr_mode: str = "constant"  # LR schedule, one of handlers.LR_MODES, applied every iteration
    lr_steps: list[int] = field(default_factory=list)  # lr_mode step: epochs after which the LR is multiplied
    lr_factor: float = 0.1  # lr_mode step: the multiplier at each of lr_steps
    warmup_epochs: int = 0  # epochs of linear warmup before the schedule
    warmup_lr: float = 0.0  # the LR warmup starts from (scaled per group like --lr-mult)
    seed: int = 42  # seeds torch, numpy and random; same seed and options give the same metrics
    device: str = "auto"  # one of DEVICES; auto = cuda if available
    output_dir: str = ""  # where the run's files go; "" = runs/<recipe>
    resume: str | None = None  # None: new run; "": latest checkpoint in output_dir; else a checkpoint path
    interrupt_at: int | None = None  # after this epoch's validation, save and exit with status 3
    early_stopping: int | None = None  # stop after this many validations without improving the monitored metric
    save_frequency: int = 1  # epochs between latest checkpoints (the last epoch and stops are always saved)
    test_run: bool = False  # one training and one validation batch per epoch
    progress: bool = True  # tqdm progress bar (with epoch and run ETA) when stderr is a terminal
    progress_file: str | None = None  # a JSON file kept up to date with epoch and run ETA, for schedulers
    amp: bool = False  # autocast: bf16 (fp16 + GradScaler on CUDA without bf16)
    channels_last: bool = False  # channels-last (NHWC) memory format for the model and image batches
    compile: bool = False  # torch.compile the model; the first iterations pay a one-off compile (seconds to minutes)
    nproc_per_node: int = 1  # data-parallel worker processes spawned on this machine (idist.Parallel); 1 = none
    profile: bool = False  # time every handler (Ignite's HandlersTimeProfiler) and log the cost table at the end
