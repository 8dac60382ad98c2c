"""The host's training parts, for finetuner authors: what the built-in finetuners are made of.

A finetuner that uses these reads, samples, freezes, optimises and stops exactly as the trainer and the built-in
finetuners do (the same skipping of unreadable images, the same optimizer settings, the same error on a diverging
loss), without importing the host's internal modules. Like the rest of ``lrfr_plugins.api``, these names are stable.

* Data: :func:`load_batch` (uint8 images and int64 labels of the readable items at some indices, and how many were
  skipped), :func:`collate_readable` (the same as a DataLoader ``collate_fn``), :func:`dataset_labels` (every
  item's label without the pixels, through ``FaceDataset.labels()``), :func:`hflip`.
* Sampling: :class:`ShuffledBatchSampler` (uniform batches, a pure function of seed and epoch) and
  :class:`IdentityBatchSampler` (P identities x K images).
* Freezing: :func:`check_freeze` (for ``Finetuner.check``), :func:`freeze_prefixes`, :func:`batchnorm_modules`,
  :func:`training_mode` (train mode with frozen parts, restored afterwards).
* Optimising: :func:`build_optimizer` with :class:`OptimizerConfig` (sgd or adamw), :func:`schedule_factor`
  (warm-up, then multistep, cosine or polynomial decay), :func:`optimise` (the loop skeleton: steps over passes of
  batches, progress bar, schedule, the stop on a non-finite loss), :func:`check_finite_loss` and
  :class:`NonFiniteLossError`.
* The margin loss: :func:`estimate_quality` calls ``context.quality`` as the trainer does, so
  ``context.classifier(embeddings, labels, context.head, quality)`` sees what it saw in training.
"""

from ..engine.batches import collate_readable, hflip, load_batch
from ..engine.config import OptimizerConfig
from ..engine.finetune_loop import optimise
from ..engine.freezing import batchnorm_modules, check_freeze, freeze_prefixes, training_mode
from ..engine.optim import build_optimizer, check_finite_loss, schedule_factor
from ..engine.quality import estimate_quality
from ..engine.samplers import IdentityBatchSampler, ShuffledBatchSampler
from ..errors import NonFiniteLossError
from .dataset import dataset_labels

__all__ = ["load_batch", "collate_readable", "dataset_labels", "hflip", "ShuffledBatchSampler",
           "IdentityBatchSampler", "check_freeze", "freeze_prefixes", "batchnorm_modules", "training_mode",
           "build_optimizer", "OptimizerConfig", "schedule_factor", "optimise", "check_finite_loss",
           "NonFiniteLossError", "estimate_quality"]
