"""The checks every model and layer runs on what it is given.

A model that receives something it cannot use should say so in words, and say
what would work, before PyTorch fails somewhere inside with a message about
bias types or tensor sizes.  ``check_image`` is the one input check every
model's ``forward_*`` calls (it also runs while FLOPs are counted, so no figure
is ever reported for an input the model would refuse); ``check_tokens`` is the
one check of ``(B, N, C)`` token layers; ``check_model_args`` and the small
``check_*`` helpers validate constructor arguments, quoting the value given.

>>> import torch
>>> check_image(torch.zeros(1, 3, 64, 64), in_chans=3, multiple=32)
>>> check_image(torch.zeros(1, 3, 60, 64), in_chans=3, multiple=32, name="ConvNeXt")
Traceback (most recent call last):
...
ValueError: ConvNeXt needs H and W divisible by 32, got 60 x 64; the nearest sizes that work are 32 and 64
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def static_shape(x: torch.Tensor) -> Tuple[int, ...]:
    """``x.shape`` as Python ints, also while ``torch.jit.trace`` records a model
    (FLOP counting), where sizes are tensors and turning them into ints warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(s) for s in x.shape)


def nearest_multiples(size: int, multiple: int, minimum: int = 1) -> str:
    """'224 and 256': the multiples of ``multiple`` (and at least ``minimum``) around ``size``.

    >>> nearest_multiples(225, 32), nearest_multiples(20, 32), nearest_multiples(5, 4, 16)
    ('224 and 256', '32', '16')
    """
    floor = max(multiple, -(-minimum // multiple) * multiple)
    lo = (size // multiple) * multiple
    options = [s for s in (lo, lo + multiple) if s >= floor] or [floor]
    return " and ".join(str(s) for s in options)


def check_image(x, in_chans: int, multiple: int = 1, min_size: int = 1,
                name: str = "this model", why: str = "") -> None:
    """Raise a ``TypeError`` / ``ValueError`` that says what works unless ``x`` is a
    floating-point tensor ``(B, in_chans, H, W)`` with H and W multiples of
    ``multiple`` and at least ``min_size``.

    ``why`` explains the multiple (e.g. "a /4 stem, then three /2 downsamplings").
    """
    if not isinstance(x, torch.Tensor):
        if type(x).__module__ == "numpy":
            raise TypeError(f"{name} expects a torch.Tensor (B, {in_chans}, H, W), got a numpy "
                            f"array of shape {getattr(x, 'shape', '?')}: convert it with "
                            f"torch.from_numpy(x) (and .permute(0, 3, 1, 2) if it is (B, H, W, C))")
        raise TypeError(f"{name} expects a torch.Tensor (B, {in_chans}, H, W), "
                        f"got {type(x).__name__}")
    shape = static_shape(x)
    if x.ndim == 3 and shape[0] == in_chans:
        raise ValueError(f"{name} expects a batch (B, {in_chans}, H, W), got one image of shape "
                         f"{shape}: add the batch dimension with x.unsqueeze(0)")
    if x.ndim != 4:
        raise ValueError(f"{name} expects images (B, {in_chans}, H, W), got a {x.ndim}-d tensor "
                         f"of shape {shape}")
    if shape[1] != in_chans:
        if shape[3] == in_chans:
            raise ValueError(f"{name} expects channels first (B, {in_chans}, H, W); the input "
                             f"{shape} looks channels-last (B, H, W, C): use "
                             f"x.permute(0, 3, 1, 2)")
        raise ValueError(f"{name} was built for {in_chans}-channel images (B, {in_chans}, H, W) "
                         f"but got {shape[1]} channels (shape {shape}); build it with "
                         f"in_chans={shape[1]}, or convert the input")
    if not x.is_floating_point():
        if x.dtype == torch.uint8:
            raise TypeError(
                f"{name} expects floating-point images, got uint8 pixels (0-255): scale and "
                f"normalise them, x = (x.float() / 255 - mean) / std, with the ImageNet mean "
                f"{IMAGENET_MEAN} and std {IMAGENET_STD} per channel")
        raise TypeError(f"{name} expects floating-point images, got {x.dtype}: use x.float()")
    H, W = shape[2], shape[3]
    bad = [s for s in (H, W) if s % multiple or s < min_size]
    if bad:
        s = bad[0]
        because = f" ({why})" if why else ""
        if s < min_size:
            raise ValueError(f"{name} needs inputs of at least {min_size} x {min_size}{because}, "
                             f"got {H} x {W}")
        raise ValueError(f"{name} needs H and W divisible by {multiple}{because}, got {H} x {W}; "
                         f"the nearest sizes that work are {nearest_multiples(s, multiple, min_size)}")


def check_tokens(x: torch.Tensor, dim: int, H: int, W: int, name: str = "this layer") -> None:
    """Raise a ``ValueError`` unless ``x`` is tokens ``(B, N, dim)`` with N = H * W."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        got = static_shape(x) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} expects tokens (B, N, {dim}), got {got}")
    shape = static_shape(x)
    if shape[2] != dim:
        raise ValueError(f"{name} expects tokens (B, N, {dim}), got {shape}")
    if shape[1] != H * W:
        raise ValueError(f"{name} got {shape[1]} tokens, which do not fill an H x W = "
                         f"{H} x {W} grid ({H * W} tokens)")


# ----------------------------------------------------------------------------- constructor arguments


def check_int(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int, or a ``ValueError`` quoting it when it is not an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_rate(name: str, value, upper_inclusive: bool = False) -> float:
    """A probability in [0, 1) (or [0, 1]); otherwise a ``ValueError`` quoting the value."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0)
    if not ok:
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_positive_ints(name: str, values: Sequence, length: Optional[int] = None) -> tuple:
    """A tuple of positive ints (of ``length`` entries if given), or a ``ValueError``."""
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}") from None
    if length is not None and len(values) != length:
        raise ValueError(f"{name} needs {length} entries (one per stage), got {values!r}")
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {values!r}")
    return values


def check_model_args(num_classes, in_chans, drop_path_rate) -> None:
    """The three arguments every model takes: ``num_classes >= 0`` (0: no classifier),
    ``in_chans >= 1``, ``0 <= drop_path_rate < 1``."""
    check_int("num_classes", num_classes, 0)
    check_int("in_chans", in_chans, 1)
    check_rate("drop_path_rate", drop_path_rate)
