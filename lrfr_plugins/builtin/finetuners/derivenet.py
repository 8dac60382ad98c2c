"""DeriveNet fine-tuning: Derived-Margin softmax + Reconstruction-Centre (ReCent) loss on low-resolution inputs.

Singh, Nagpal, Singh, Vatsa, *DeriveNet for (Very) Low Resolution Image Classification*, TPAMI 44(10), 2022
(REFERENCE §10). No public code for the paper exists and its full text was not available to us, so this module is
built from three sources, kept apart below.

**From the paper's abstract (§10.1).**

- Two joint losses: a *Derived-Margin (D-Margin) softmax* that models inter-class variation, and a
  *Reconstruction-Centre (ReCent) loss* that learns an HR reconstruction space from VLR/LR samples and is used to
  derive the inter-class margins.
- A *multi-resolution pyramid* augmentation: here ``lr_sizes`` (each training image is degraded to one size drawn
  uniformly from the list; a size >= 112 leaves it at full resolution).

**From the founding study's report (§10.2) and its code's intent (§10.3).**

- ``L_DMargin = -log softmax_y( |W_j| |x| cos(theta_j) + D(C_y, C_j) )`` with D the cosine similarity of class
  reconstruction centres, added to **every** logit (the study's code added it to the target only, a constant +1).
- ``L_ReCent = lambda * ( |HR_i - g(x_i)|^2 + |g(x_i) - C_{y_i}|^2 )``, g a decoder from the LR embedding x_i to
  an HR image, C_y the running mean of the detached g(x) of class y, the current batch included (the study's order:
  centres are updated first, then used); ``lambda_recent`` = 1e-3 (the study's code).
- LR input: 16 px and back to 112 (``lr_sizes = [16]``), bilinear without anti-aliasing by default (``resize_*``).
- SGD with momentum and weight decay 1e-4 (the study: lr 0.1, momentum 0.5, batch 16; those defaults are not kept,
  see below).
- The study's bugs are *not* reproduced: the backbone and W are in the optimiser (the study's held only g and an
  unused classifier); D is added to every logit; the centre update is loop-free (``index_add_``); a class with no
  sample yet has a zero centre and D = 0 with every other class (the study's gave NaN); the cross-entropy is
  averaged once (the study divided it by B twice).

**Our choices (unknown without the paper, §10.4).**

- *Centre space*: reconstructions and centres live at ``centre_size`` x ``centre_size`` (default 28), not 112.
  The HR target is the network-normalised HR image ((x - 127.5) / 127.5, RGB) area-averaged to that size. The
  centre buffer is float32 (C, 3, r, r): **C * 3 * r * r * 4 bytes**, e.g. 10,572 classes: r = 28 -> 99.5 MB,
  r = 56 -> 398 MB, r = 112 -> 1.59 GB (the study's choice). A per-class sample count (int64, 8 bytes a class)
  sits beside it. ReCent's squared norms are summed over the 3 r^2 values and averaged over the batch, so lambda
  means different things at different r (the study's sum was over 3 x 112 x 112).
- *Centre update*: ``centre_update = "mean"`` (default) is the exact cumulative mean of every g(x) seen (the
  study's); ``"ema"`` is ``C <- m C + (1 - m) mean_batch(g(x) of class y)`` with ``centre_momentum`` m, a class's
  first batch setting its centre directly. Both run on the unique labels of the batch only.
- *Decoder g*: ``Linear(D, k * s0^2) -> (k, s0, s0)`` then two ``[nearest x2, conv3x3, BN, PReLU]`` stages
  (k = ``decoder_channels``, s0 = ceil(r / 4)), a bilinear resize to r when 4 s0 != r, and a conv3x3 to 3
  channels with tanh (the target is in [-1, 1]). The study's g was three Linear layers without activations.
- *Logits*: ``scale`` = null (default) keeps the report's ``|W_j||x| cos(theta_j)`` = ``W_j . x`` (raw, as the
  study's code); a number s uses ``s cos(theta_j)`` (normalised, as the ArcFace family). W is xavier-normal, as in
  the study. ``d_weight`` multiplies D. Note the report's caution (§10.2): with a positive weight the target gets
  +w and class j gets +w cos(C_y, C_j) <= w, which *eases* the target by w (1 - D); a negative weight turns it into
  a margin against the target of |w| (1 - D). Which one the paper means is unverified; the default follows the
  formula as written (w = 1).
- D is computed from the detached centres (no gradient through the centres), including D(C_y, C_y) = 1 (0 for a
  zero centre).
- Sampling: a fixed held-out batch of ``eval_images`` images (drawn with the context's generator) is set aside;
  training batches are drawn without replacement from the rest, reshuffled each pass. The reported
  ``lr_hr_cosine_*`` is the mean cosine between the embedding of each held-out image at the *smallest* of
  ``lr_sizes`` and its HR embedding, backbone in eval mode. Training embeds only the degraded images; the
  recipe's own degradations (``context.degradations``) are not used.
- The backbone trains in train mode (BN statistics update) and is put back in its previous mode afterwards.
- W and g are initialised from a seed drawn from the context's generator (reproducible given the run's seed).
- ``initial_loss`` / ``final_loss`` are the mean total loss (D-Margin CE + ReCent) over the first / last
  k = clamp(steps // 4, 1, 5) steps, less noisy than single steps.

**Measured (tests/test_derivenet.py, tiny backbone, 8 synthetic identities, a backbone first trained at 112 px
only).** Continuing with ``lr_sizes [16, 112]`` and ``scale 16`` raised the LR-HR cosine on all of seeds 0-5 (by
0.005 to 0.14) and cut the loss by 70-80 %. With the report's raw logits (``scale`` null), at ``[16]`` or
``[16, 112]``, the loss fell as much but the cosine fell on most seeds (e.g. 0.944 -> 0.901): the raw form lets
the embedding norms and the logits grow instead of aligning LR with HR. Nothing here was checked at scale.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...api import FinetuneContext, Finetuner, param
from ...api.training import OptimizerConfig, build_optimizer, load_batch, optimise, training_mode
from ...errors import DataError
from ...ops.preprocess import to_network_input
from ...ops.resize import MODES, check_modes, resize_down_up


@dataclasses.dataclass(frozen=True)
class DeriveNetParams:
    steps: int = param(100, "optimisation steps", ge=1)
    batch_size: int = param(32, "images a step", ge=2)
    lr: float = param(0.01, "learning rate (backbone, classifier W and decoder g alike)", gt=0)
    optimizer: Literal["sgd", "adamw"] = param("sgd", "optimiser over backbone + W + g")
    momentum: float = param(0.9, "SGD momentum (the study's fine-tuning used 0.5)", ge=0, lt=1)
    weight_decay: float = param(1e-4, "weight decay (the study's)", ge=0)
    lambda_recent: float = param(1e-3, "weight of the ReCent loss (the study's code)", ge=0)
    lr_sizes: list[int] = param([16], "training resolutions: each image is degraded to one drawn uniformly "
                                      "(the pyramid); >= 112 means full resolution")
    resize_down: str = param("bilinear", f"down-sampling mode ({', '.join(MODES)})")
    resize_up: str = param("bilinear", f"up-sampling mode back to 112 ({', '.join(MODES)})")
    antialias: bool = param(False, "anti-alias the down step (the study: no)")
    centre_size: int = param(28, "side r of reconstructions and class centres; the centre buffer takes "
                                 "C * 3 * r * r * 4 bytes (10,572 classes: 28 -> 99 MB, 112 -> 1.6 GB)", ge=4, le=112)
    centre_update: Literal["mean", "ema"] = param("mean", "'mean': cumulative mean of every g(x) seen (the study's); "
                                                          "'ema': exponential moving average of batch class means")
    centre_momentum: float = param(0.9, "EMA momentum m of the centres (centre_update 'ema' only)", ge=0, lt=1)
    decoder_channels: int = param(32, "channels of the decoder g's feature maps", ge=1)
    scale: float | None = param(None, "null: the report's raw logits |W||x|cos = W.x; a number s: s*cos", gt=0)
    d_weight: float = param(1.0, "multiplier w of D(C_y, C_j) added to every logit (negative: a margin of "
                                 "|w|(1 - D) against the target; see the module doc)")
    eval_images: int = param(32, "held-out images for the LR-HR cosine (excluded from training)", ge=1)

    def __post_init__(self) -> None:
        if not self.lr_sizes:
            raise ValueError("lr_sizes must list at least one resolution, e.g. [16] or a pyramid [8, 16, 32]")
        bad = [s for s in self.lr_sizes if s < 1]
        if bad:
            raise ValueError(f"lr_sizes must be positive pixel sizes, got {self.lr_sizes}")
        check_modes(self.resize_down, self.resize_up, self.antialias)


# ----------------------------------------------------------------------------------------------- pure formulas


def centre_similarity(centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D(C_y, C_j) for every row's label y and every class j: (B, C) cosine of flattened centres (0 for a zero one)."""
    flat = F.normalize(centres.reshape(centres.shape[0], -1).float(), dim=1)
    return flat[labels] @ flat.T


def dmargin_logits(embeddings: torch.Tensor, weight: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, *,
                   scale: float | None = None, d_weight: float = 1.0) -> torch.Tensor:
    """D-Margin logits (B, C): ``|W_j||x|cos(theta_j) + w D(C_y, C_j)`` for every j (target included).

    ``scale`` None keeps ``|W_j||x|cos = W_j . x``; a number s gives ``s cos(theta_j)``. Centres are used detached.
    """
    if scale is None:
        base = embeddings.float() @ weight.float().T
    else:
        base = scale * (F.normalize(embeddings.float()) @ F.normalize(weight.float()).T).clamp(-1, 1)
    return base + d_weight * centre_similarity(centres.detach(), labels)


def recent_loss(recon: torch.Tensor, hr: torch.Tensor, centres_y: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * mean_i( |HR_i - g(x_i)|^2 + |g(x_i) - C_{y_i}|^2 )``, squared norms summed over all values."""
    recon = recon.flatten(1).float()
    rec = (hr.flatten(1).float() - recon).pow(2).sum(1)
    cen = (recon - centres_y.detach().flatten(1).float()).pow(2).sum(1)
    return lam * (rec + cen).mean()


@torch.no_grad()
def update_centres(centres: torch.Tensor, counts: torch.Tensor, recon: torch.Tensor, labels: torch.Tensor, *,
                   momentum: float | None = None) -> None:
    """Update ``centres`` (C, ...) and ``counts`` (C,) in place from a batch, without a loop over it.

    ``momentum`` None: cumulative mean, ``C_y <- (n_y C_y + sum_batch g) / (n_y + b_y)``. A float m: EMA of the
    batch class mean, ``C_y <- m C_y + (1 - m) mean_batch g``, except for a class's first batch (centre = its mean).
    Only the batch's classes are touched (memory O(unique labels), not O(C)).
    """
    unique, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros((len(unique),) + tuple(centres.shape[1:]), dtype=centres.dtype, device=centres.device)
    sums.index_add_(0, inverse, recon.detach().to(centres.dtype))
    batch_n = torch.bincount(inverse, minlength=len(unique)).to(centres.dtype)
    shape = (-1,) + (1,) * (centres.ndim - 1)
    old_n = counts[unique]
    old = centres[unique]
    if momentum is None:
        total = old_n.to(centres.dtype) + batch_n
        new = (old * old_n.to(centres.dtype).view(shape) + sums) / total.view(shape)
    else:
        batch_mean = sums / batch_n.view(shape)
        new = torch.where((old_n > 0).view(shape), momentum * old + (1 - momentum) * batch_mean, batch_mean)
    centres[unique] = new
    counts[unique] = old_n + batch_n.to(counts.dtype)


# ----------------------------------------------------------------------------------------------- modules


class Decoder(nn.Module):
    """g: embedding (B, D) -> reconstruction (B, 3, r, r) in [-1, 1]."""

    def __init__(self, embedding_size: int, centre_size: int, channels: int = 32):
        super().__init__()
        self.size = centre_size
        self.start = math.ceil(centre_size / 4)
        self.channels = channels
        self.fc = nn.Linear(embedding_size, channels * self.start * self.start)
        stages: list[nn.Module] = []
        for _ in range(2):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(channels), nn.PReLU(channels)]
        self.up = nn.Sequential(*stages)
        self.out = nn.Conv2d(channels, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.fc(x.float()).view(-1, self.channels, self.start, self.start))
        if h.shape[-1] != self.size:
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.tanh(self.out(h))


class DeriveNetHead(nn.Module):
    """What the finetuner owns: class weights W (C, D), decoder g, centres buffer (C, 3, r, r) and counts (C,)."""

    def __init__(self, num_classes: int, embedding_size: int, centre_size: int = 28, decoder_channels: int = 32):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_classes, embedding_size)))
        self.decoder = Decoder(embedding_size, centre_size, decoder_channels)
        self.register_buffer("centres", torch.zeros(num_classes, 3, centre_size, centre_size))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.int64))

    @property
    def centre_bytes(self) -> int:
        return self.centres.numel() * self.centres.element_size()

    def losses(self, embeddings: torch.Tensor, hr_target: torch.Tensor, labels: torch.Tensor, *, lam: float,
               scale: float | None, d_weight: float, momentum: float | None) -> dict[str, torch.Tensor]:
        """One step's losses; updates the centres (current batch included) before using them, as the study."""
        recon = self.decoder(embeddings)
        update_centres(self.centres, self.counts, recon, labels, momentum=momentum)
        logits = dmargin_logits(embeddings, self.weight, self.centres, labels, scale=scale, d_weight=d_weight)
        ce = F.cross_entropy(logits, labels)
        recent = recent_loss(recon, hr_target, self.centres[labels], lam)
        return {"loss": ce + recent, "ce": ce, "recent": recent}


# ----------------------------------------------------------------------------------------------- the finetuner


class DeriveNet(Finetuner):
    """DeriveNet fine-tuning: D-Margin softmax + ReCent loss on LR (pyramid) inputs; trains backbone, W and g."""

    Params = DeriveNetParams

    def __init__(self, params: DeriveNetParams):
        super().__init__(params)
        self.head: DeriveNetHead | None = None  # kept after run() for inspection

    def degrade(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 HR (B, 3, 112, 112) -> uint8 degraded, one size a image drawn uniformly from ``lr_sizes``."""
        p = self.params
        pick = torch.randint(len(p.lr_sizes), (images.shape[0],), generator=generator)
        sizes = torch.as_tensor(p.lr_sizes, dtype=torch.int64)[pick]
        return resize_down_up(images, sizes, down=p.resize_down, up=p.resize_up, antialias=p.antialias)

    def hr_target(self, images: torch.Tensor) -> torch.Tensor:
        r = self.params.centre_size
        x = to_network_input(images)
        return x if x.shape[-1] == r else F.interpolate(x, size=(r, r), mode="area")

    @torch.no_grad()
    def lr_hr_cosine(self, backbone: nn.Module, images: torch.Tensor) -> float:
        p = self.params
        was_training = backbone.training
        backbone.eval()
        try:
            lr = resize_down_up(images, min(p.lr_sizes), down=p.resize_down, up=p.resize_up, antialias=p.antialias)
            e_lr = backbone(to_network_input(lr))
            e_hr = backbone(to_network_input(images))
            return F.cosine_similarity(e_lr.float(), e_hr.float(), dim=1).mean().item()
        finally:
            backbone.train(was_training)

    def run(self, context: FinetuneContext) -> dict[str, Any]:
        p = self.params
        backbone, dataset, device, gen = context.backbone, context.dataset, context.device, context.generator
        n = len(dataset)
        if n < p.eval_images + 2:
            raise DataError(f"derivenet: the dataset has {n} images, too few to hold out eval_images="
                            f"{p.eval_images} and train on at least 2; lower eval_images")
        embedding_size = int(backbone.embedding_size)
        with torch.random.fork_rng(devices=[]):  # W and g drawn from the context's generator: reproducible runs
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
            head = DeriveNetHead(dataset.num_classes, embedding_size, p.centre_size, p.decoder_channels)
        self.head = head = head.to(device)
        optimizer = build_optimizer([*backbone.parameters(), *head.parameters()], OptimizerConfig(
            name=p.optimizer, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay))

        perm = torch.randperm(n, generator=gen)
        eval_images, _, _ = load_batch(dataset, perm[:p.eval_images].tolist())
        if eval_images is None:
            raise DataError("derivenet: none of the held-out images could be read (skip_corrupt dropped them all).")
        eval_images = eval_images.to(device)
        pool = perm[p.eval_images:]
        batch_size = min(p.batch_size, len(pool))
        momentum = p.centre_momentum if p.centre_update == "ema" else None

        def passes(epoch: int):
            """The pool reshuffled from the context's generator (drawn when the pass starts), in whole batches."""
            order = pool[torch.randperm(len(pool), generator=gen)]
            for start in range(0, len(order) - batch_size + 1, batch_size):
                yield order[start:start + batch_size].tolist()

        def batch_loss(batch: list[int]) -> dict[str, torch.Tensor] | None:
            hr, labels, _ = load_batch(dataset, batch)
            if hr is None or hr.shape[0] < 2:
                return None
            lr_images = self.degrade(hr, gen)
            hr, lr_images, labels = hr.to(device), lr_images.to(device), labels.to(device)
            embeddings = backbone(to_network_input(lr_images))
            return head.losses(embeddings, self.hr_target(hr), labels, lam=p.lambda_recent, scale=p.scale,
                               d_weight=p.d_weight, momentum=momentum)

        cos_before = self.lr_hr_cosine(backbone, eval_images)
        with training_mode(backbone, [], []):
            losses, _ = optimise(optimizer, p.steps, passes, batch_loss, name="derivenet", progress=context.progress,
                                 fix=f"Lower finetune.N.params.lr (now {p.lr:g}).")
        cos_after = self.lr_hr_cosine(backbone, eval_images)
        k = max(1, min(5, len(losses) // 4))  # loss averaged over the first / last few steps: less noisy
        return {"steps": len(losses), "initial_loss": sum(losses[:k]) / k, "final_loss": sum(losses[-k:]) / k,
                "lr_hr_cosine_before": cos_before, "lr_hr_cosine_after": cos_after}
