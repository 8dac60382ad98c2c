"""The training host's settings (the recipe's ``train`` and ``export`` sections), declared as ``Params``.

They live in the engine, which runs by them; the recipe only reads them from YAML, so the engine never knows the
recipe format.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..params import param


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adamw"] = param("sgd", "optimizer")
    # bounded so that lr x embedding_lr_scale stays a float32 (beyond it the optimizer fails with a traceback)
    lr: float = param(0.1, "learning rate", gt=0, le=1e30)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(5e-4, "weight decay", ge=0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = param(1, "passes over the training set", ge=0)
    batch_size: int = param(64, "images per step (per process)", ge=2)
    optimizer: dict = param({}, "optimizer: name (sgd | adamw), lr, momentum, weight_decay")
    schedule: Literal["multistep", "cosine", "polynomial"] = param(
        "multistep", "learning-rate schedule after warm-up: x gamma at each milestone, cosine decay to 0, or "
                     "arcface_torch's polynomial (linear) decay to 0")
    milestones: list[int] = param([], "epochs at which the learning rate is multiplied by gamma (multistep)")
    gamma: float = param(0.1, "learning-rate factor at each milestone", gt=0)
    warmup_steps: int = param(0, "linear learning-rate warm-up, in steps", ge=0)
    max_steps: int | None = param(None, "stop after this many steps (for quick checks); null: all epochs")
    embedding_lr_scale: float = param(1.0, "learning-rate factor for the classifier (class centres)", gt=0, le=1e6)
    sample_rate: float = param(1.0, "Partial FC: fraction of each rank's class centres scored per step (every class "
                                    "of the batch always is; arcface_torch's sample_rate)", gt=0, le=1)
    hflip: float = param(0.5, "probability of a horizontal flip per training image", ge=0, le=1)
    grad_clip: float | None = param(5.0, "clip the backbone's gradient norm (arcface_torch: 5); null: off")
    device: Literal["auto", "cpu", "cuda"] = param("auto", "where to train: auto picks CUDA when available")
    num_workers: int = param(0, "DataLoader worker processes", ge=0)
    threads: int | None = param(None, "torch CPU threads; null: torch's default")
    log_every: int = param(10, "steps between metric log lines", ge=1)
    checkpoint_every: int | None = param(None, "also checkpoint every N steps, mid-epoch (resumable at that batch); "
                                               "null: at epoch ends only", ge=1)
    eval_every: int | None = param(None, "run the recipe's eval protocols every N epochs during training (logged to "
                                         "metrics.jsonl and TensorBoard); null: only at the end", ge=1)
    amp: Literal["none", "bf16", "fp16"] = param(
        "none", "mixed precision: bf16 autocast, or fp16 autocast with a gradient scaler (GPU); heads compute their "
                "margins in float32 either way")
    channels_last: bool = param(False, "channels-last memory format for the backbone (faster convolutions on GPU)")
    compile: bool = param(False, "torch.compile the backbone (needs a working compiler toolchain)")
    tensorboard: bool = param(True, "write TensorBoard event files to RUN_DIR/tensorboard when the tensorboard "
                                    "package is installed")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    onnx: bool = param(True, "write model.onnx that insightface.model_zoo.get_model loads as ArcFaceONNX")
    opset: int = param(17, "ONNX opset", ge=11)
