"""Augmentation on the device, in batches: random-resized crop and flip as one
``affine_grid``/``grid_sample`` call, Mixup or CutMix (returning the mixing mask and
lambda, which EMA distillation needs), label smoothing and normalisation.

A batch is a pure function of (seed, epoch, step): the per-sample draws come from a
generator on the data's device seeded by that key (seeding is a host operation, so
nothing waits for the device), the batch's mixing decision from the same key on the
host; the same after a resume and whichever rank of a multi-GPU run draws it.  (A CPU
and a GPU draw different, equally distributed numbers.)
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from hirilib.layers.checks import IMAGENET_MEAN, IMAGENET_STD
from .cache import ImageData

#: ImageNet's channel statistics on the 0-255 scale (hirilib.layers.checks has them
#: on the 0-1 scale), used by every model in the book.
MEAN = tuple(255 * m for m in IMAGENET_MEAN)
STD = tuple(255 * s for s in IMAGENET_STD)


def seed_of(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (seed, epoch, step, ...)."""
    h = hashlib.sha256(",".join(str(int(k)) for k in keys).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def seeded_generator(*keys: int, device=None) -> torch.Generator:
    """A generator on ``device`` (default the CPU) seeded by a tuple of integers:
    seeding is a host operation, drawing from it needs no synchronisation."""
    return torch.Generator(device=device or "cpu").manual_seed(seed_of(*keys))


def epoch_order(seed: int, epoch: int, n: int, device=None) -> torch.Tensor:
    """The training set's order in ``epoch``: a permutation of ``range(n)`` on
    ``device`` that depends only on ``seed``, ``epoch`` and the device's kind (so a
    resumed run sees the same order)."""
    g = seeded_generator(seed, epoch, -1, device=device)
    return torch.randperm(n, generator=g, device=g.device)


def rrc_params(
    n: int,
    generator: torch.Generator,
    scale=(0.35, 1.0),
    ratio=(3 / 4, 4 / 3),
    hflip: float = 0.5,
) -> torch.Tensor:
    """Per-sample random-resized-crop boxes, ``(n, 5)``: width and height as fractions
    of the image side, the centre ``(cx, cy)`` in [0, 1], and a flip sign (+1 or -1).

    The area fraction is uniform in ``scale``, the aspect ratio log-uniform in
    ``ratio``; a box that would not fit is shrunk to fit (keeping its centre inside),
    rather than re-drawn, so every sample costs the same.
    """
    u = torch.rand(n, 5, generator=generator, device=generator.device)  # (n, 5)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = w / 2 + (1 - w) * u[:, 2]
    cy = h / 2 + (1 - h) * u[:, 3]
    flip = torch.where(u[:, 4] < hflip, -1.0, 1.0)
    return torch.stack([w, h, cx, cy, flip], 1)


def crop_resize(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, flip it if asked and resize it to ``size``: one
    ``grid_sample`` for the batch.  ``images`` (B, C, S, S) float; ``params`` (B, 5) as
    :func:`rrc_params` gives; returns (B, C, size, size).

    ``affine_grid`` maps output coordinates in [-1, 1] to input ones: x_in = sx * x_out
    + tx, with sx = w * flip (the box's half-width in [-1, 1] units is w) and
    tx = 2 cx - 1 (its centre); likewise for y.
    """
    p = params.to(images.device, images.dtype)
    B = images.shape[0]
    theta = torch.zeros(B, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = p[:, 0] * p[:, 4]
    theta[:, 0, 2] = 2 * p[:, 2] - 1
    theta[:, 1, 1] = p[:, 1]
    theta[:, 1, 2] = 2 * p[:, 3] - 1
    grid = F.affine_grid(theta, [B, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


_STATS: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}


def _stats(device: torch.device, dtype: torch.dtype):
    """MEAN and STD as (1, 3, 1, 1) tensors on ``device``, copied there once."""
    key = (str(device), dtype)
    if key not in _STATS:
        _STATS[key] = tuple(
            torch.tensor(v, dtype=dtype).view(1, -1, 1, 1).to(device)
            for v in (MEAN, STD)
        )
    return _STATS[key]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """0-255 pixels -> ImageNet-normalised values, per channel."""
    mean, std = _stats(x.device, x.dtype)
    return (x - mean) / std


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(B,)`` labels -> ``(B, K)``: 1 - eps + eps/K on the label, eps/K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device)
    return out.scatter_(1, y.view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(
    lam: float, H: int, W: int, cy: int, cx: int
) -> Tuple[int, int, int, int]:
    """The CutMix box for a drawn ``lam``: sides ``sqrt(1 - lam)`` of the image's,
    centred at ``(cy, cx)``, clipped to the image; ``(y0, y1, x0, x1)``."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    y0, y1 = min(max(cy - ch // 2, 0), H), min(max(cy + ch // 2, 0), H)
    x0, x1 = min(max(cx - cw // 2, 0), W), min(max(cx + cw // 2, 0), W)
    return y0, y1, x0, x1


def cutmix_mask(
    lam: float, H: int, W: int, cy: int, cx: int, device=None
) -> Tuple[torch.Tensor, float]:
    """CutMix's mixing mask ``M`` (1, 1, H, W) and its lambda.

    ``M`` is 1 where the image keeps its own pixels and 0 inside the box, where the
    partner's are pasted: x~ = M * x_a + (1 - M) * x_b.  Clipping at the border makes
    the box smaller than drawn, so lambda is recomputed as the fraction of the image
    that is still the sample's own, lambda = mean(M): the label weights then match the
    pixels exactly.
    """
    y0, y1, x0, x1 = cutmix_box(lam, H, W, cy, cx)
    mask = torch.ones(1, 1, H, W, device=device)  # made on the device: no copy
    mask[..., y0:y1, x0:x1].zero_()
    return mask, 1.0 - (y1 - y0) * (x1 - x0) / (H * W)


@dataclass
class MixDraw:
    """One batch's mixing decision: ``mode`` 'none', 'mixup' or 'cutmix', the drawn
    lambda, and the CutMix box centre."""

    mode: str
    lam: float
    cy: int = 0
    cx: int = 0


def draw_mix(
    generator,
    H: int,
    W: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
) -> MixDraw:
    """Whether and how to mix one batch (timm's batch mode): with probability ``prob``
    mix at all; then CutMix with probability ``switch_prob`` when both are on; lambda
    ~ Beta(alpha, alpha) of the chosen one.  ``generator``: an integer seed (how
    :class:`BatchAugment` draws: on the host, no tensor, no synchronisation) or a CPU
    ``torch.Generator``."""
    import numpy as np

    if isinstance(generator, torch.Generator):
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    else:
        u = np.random.default_rng(int(generator)).random(5).tolist()
    on = [m for m, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not on or u[0] >= prob:
        return MixDraw("none", 1.0)
    mode = on[0] if len(on) == 1 else ("cutmix" if u[1] < switch_prob else "mixup")
    alpha = cutmix_alpha if mode == "cutmix" else mixup_alpha
    # numpy's Beta sampler, seeded from the draw: reproducible, no global RNG
    lam = float(np.random.default_rng(int(u[4] * 2**53)).beta(alpha, alpha))
    return MixDraw(mode, lam, min(int(u[2] * H), H - 1), min(int(u[3] * W), W - 1))


def mix_mask(
    draw: MixDraw, H: int, W: int, device=None
) -> Tuple[torch.Tensor, float]:
    """The mask ``M`` (1, 1, H, W) and lambda of a draw, made on ``device``: CutMix's
    box mask; for Mixup a constant lambda everywhere; no mixing: ones and 1."""
    if draw.mode == "cutmix":
        return cutmix_mask(draw.lam, H, W, draw.cy, draw.cx, device)
    lam = draw.lam if draw.mode == "mixup" else 1.0
    return torch.full((1, 1, H, W), lam, device=device), lam


@dataclass
class Batch:
    """One augmented training batch on the device.

    ``x_a`` (B, 3, R, R): the samples after crop, flip and normalisation, unmixed (the
    EMA teacher sees these); ``x_b``: their partners (the batch reversed), the other
    CutMix source; ``x``: the mixed input M * x_a + (1 - M) * x_b that the student
    sees; ``mask`` (1, 1, R, R) and ``lam`` (= mean of ``mask``); ``target`` (B, K): the
    mixed, smoothed labels; ``labels`` (B,): the samples' own labels.
    ``partner_is_flip``: x_b is x_a reversed along the batch (one process), so a
    teacher's output on x_b is its output on x_a reversed.
    """

    x: torch.Tensor
    x_a: torch.Tensor
    x_b: torch.Tensor
    mask: torch.Tensor
    lam: float
    mode: str
    target: torch.Tensor
    labels: torch.Tensor
    partner_is_flip: bool


class BatchAugment:
    """Turns indices into an augmented, mixed batch on the data's device.

    One generator per (seed, epoch, step) draws the crop boxes and flips of the
    *global* batch and one mixing decision; a rank of a multi-GPU run takes its slice
    of each, and the partner of global sample i is sample G - 1 - i (the global batch
    reversed), so N processes see exactly the samples, crops and pairs one process
    would see with the same global batch.
    """

    def __init__(
        self,
        data: ImageData,
        res: int,
        num_classes: int,
        seed: int = 0,
        min_scale: float = 0.35,
        hflip: float = 0.5,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        device: Optional[torch.device] = None,
        channels_last: bool = False,
    ):
        self.data, self.res, self.num_classes, self.seed = data, res, num_classes, seed
        self.min_scale, self.hflip = min_scale, hflip
        self.mix = dict(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=mix_prob,
            switch_prob=switch_prob,
        )
        self.label_smoothing = label_smoothing
        self.device = device or data.device
        self.channels_last = channels_last

    def _images(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        src = self.data.train_images
        raw = src[idx.to(src.device)].to(self.device, non_blocking=True)  # (B, 3, S, S)
        x = normalize(crop_resize(raw.float(), params, self.res))  # (B, 3, R, R)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        )

    def __call__(
        self,
        global_idx: torch.Tensor,
        epoch: int,
        step: int,
        rank: int = 0,
        world: int = 1,
    ) -> Batch:
        """The batch of ``global_idx`` (on the data's device) at (epoch, step): every
        tensor made on the device, the per-sample draws from a device generator, the
        batch's mixing decision on the host from the same key; nothing is copied from
        or to the host."""
        G = global_idx.numel()
        B = G // world
        g = seeded_generator(self.seed, epoch, step, device=self.device)
        params = rrc_params(G, g, (self.min_scale, 1.0), hflip=self.hflip)  # (G, 5)
        key = seed_of(self.seed, epoch, step, 1)
        draw = draw_mix(key, self.res, self.res, **self.mix)
        sl = slice(rank * B, (rank + 1) * B)
        partner = torch.arange(G - 1, -1, -1, device=global_idx.device)[sl]
        x_a = self._images(global_idx[sl], params[sl])
        if world == 1:
            x_b = x_a.flip(0)
        else:
            x_b = self._images(global_idx[partner], params[partner.to(params.device)])
        mask, lam = mix_mask(draw, self.res, self.res, self.device)
        x = x_a if draw.mode == "none" else mask * x_a + (1 - mask) * x_b
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = self.data.train_labels
        labels_all = labels[global_idx.to(labels.device)].to(self.device)
        K, eps = self.num_classes, self.label_smoothing
        y_a = smooth_one_hot(labels_all[sl], K, eps)
        y_b = smooth_one_hot(labels_all[partner.to(self.device)], K, eps)
        target = lam * y_a + (1 - lam) * y_b
        return Batch(
            x, x_a, x_b, mask, lam, draw.mode, target, labels_all[sl], world == 1
        )


def eval_images(
    images: torch.Tensor, res: int, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """Validation view: the whole cached image resized to ``res`` (antialiased when it
    shrinks), normalised.  No crop, no flip, no test-time augmentation."""
    x = images.to(device, non_blocking=True).float()
    if x.shape[-1] != res:
        x = F.interpolate(
            x, size=(res, res), mode="bilinear", antialias=True, align_corners=False
        )
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def benchmark(
    data: ImageData,
    res: int,
    batch_size: int = 128,
    steps: int = 20,
    device: Optional[torch.device] = None,
    threads: Optional[int] = None,
) -> Dict:
    """Images per second of the data side alone (indexing, crop, flip, Mixup/CutMix,
    normalisation) on ``device``, with the data held there: what the input pipeline
    could feed a model that took no time at all."""
    from hirilib.measure.timing import sync

    device = torch.device(device or data.device)
    if threads:
        torch.set_num_threads(threads)
    d = data.to(device) if data.device != device else data
    aug = BatchAugment(d, res, d.num_classes, device=device)
    n = d.train_labels.numel()
    order = epoch_order(0, 0, n, device=d.device)
    batches = [
        order[(i * batch_size) % max(1, n - batch_size) :][:batch_size]
        for i in range(steps + 2)
    ]

    for i in range(2):
        aug(batches[i], 0, i)
    sync(device)
    t = time.perf_counter()
    for i in range(2, steps + 2):
        aug(batches[i], 0, i)
    sync(device)
    dt = time.perf_counter() - t
    from hirilib.measure import device_name

    return {
        "images_per_s": steps * batch_size / dt,
        "batch_size": batch_size,
        "res": res,
        "cache_size": d.size,
        "steps": steps,
        "device": device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
