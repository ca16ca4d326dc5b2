"""Chapter 7's exercises: the arithmetic of cost — intensity, achieved rate, training memory.

Each check compares the student's function with hirilib's (``analytic.op_cost``,
``measure.roofline.achieved_tflops``, the training-memory arithmetic of
``measure.memory``) on several cases, and names the usual slips: MACs taken for FLOPs,
elements taken for bytes, the weights or the batch forgotten, gradients or optimizer
state left out.
"""

from __future__ import annotations

import math

from hirilib.checks import CheckFailed, Exercise, register


def _close(got, want, rel=1e-6) -> bool:
    return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=rel)


def _check_number(got, want, what, mistakes) -> None:
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise CheckFailed(f"{what}: expected a number, got {type(got).__name__} {got!r}")
    if _close(got, want):
        return
    named = [m for m, v in mistakes.items() if _close(got, v)]
    if named:
        raise CheckFailed(f"{what}: you give {got:.6g}, the answer is {want:.6g}: that is "
                          f"what you get with {' / '.join(named)}")
    raise CheckFailed(f"{what}: you give {got:.6g}, the answer is {want:.6g}")


# ----------------------------------------------------------------------------- 1. intensity


def _intensity(C, H, W, k, depthwise):
    from hirilib.analytic import op_cost
    return op_cost("dwconv" if depthwise else "conv", channels=C, height=H, width=W,
                   kernel=k)["intensity"]


def check_conv_intensity(fn) -> None:
    """``fn(C, H, W, k, depthwise)``: the arithmetic intensity (FLOPs per byte, a
    multiply-accumulate = 2 FLOPs, fp32 = 4 bytes) of a stride-1 'same' k x k convolution
    C -> C on a (1, C, H, W) map, depthwise or dense, without bias (the weights are the
    k x k kernels only), reading the input and the weights once and writing the output
    once."""
    for C, H, W, k, dw in [(64, 56, 56, 7, True), (96, 28, 28, 3, False),
                           (384, 14, 14, 7, True), (64, 7, 7, 3, False)]:
        want = _intensity(C, H, W, k, dw)
        N = H * W
        macs = N * C * k * k * (1 if dw else C)
        weights = C * k * k * (1 if dw else C)
        mistakes = {
            "MACs counted instead of FLOPs (a multiply-accumulate is 2 operations)":
                macs / (4 * (weights + 2 * N * C)),
            "elements counted instead of bytes (fp32: 4 bytes each)":
                2 * macs / (weights + 2 * N * C),
            "the weights' bytes left out": 2 * macs / (4 * 2 * N * C),
            "the output's bytes left out (only the reads counted)":
                2 * macs / (4 * (weights + N * C)),
            "a bias read with the weights (the convolution has none: its weights are "
            "the k x k kernels only)": 2 * macs / (4 * (weights + C + 2 * N * C)),
        }
        if dw:
            dense = N * C * k * k * C
            mistakes["a depthwise conv counted as dense (k*k*C MACs per output)"] = (
                2 * dense / (4 * (weights + 2 * N * C)))
        kind = "depthwise" if dw else "dense"
        _check_number(fn(C, H, W, k, dw), want, f"{kind} {k}x{k} conv, C={C}, {H}x{W}",
                      mistakes)


def _intensity_as_macs(C, H, W, k, depthwise):
    return _intensity(C, H, W, k, depthwise) / 2


def _intensity_with_bias(C, H, W, k, depthwise):
    macs = H * W * C * k * k * (1 if depthwise else C)
    weights = C * k * k * (1 if depthwise else C)
    return 2 * macs / (4 * (weights + C + 2 * H * W * C))


def _intensity_in_elements(C, H, W, k, depthwise):
    return _intensity(C, H, W, k, depthwise) * 4


# ----------------------------------------------------------------------------- 2. rate


def _achieved(macs_per_image, batch, seconds, peak_tflops):
    from hirilib.measure.roofline import achieved_tflops
    return achieved_tflops(macs_per_image * batch, seconds) / peak_tflops


def check_fraction_of_peak(fn) -> None:
    """``fn(macs_per_image, batch, seconds, peak_tflops)``: the fraction of the device's
    peak that a forward pass reached, given the model's multiply-accumulates per image
    (the papers' "FLOPs"), the batch, the measured time of the batch in seconds and the
    device's peak in TFLOP/s (which counts a multiply-accumulate as 2 operations)."""
    for macs, b, s, peak in [(4.5e9, 64, 0.05, 65.0), (0.57e9, 1, 0.004, 8.1),
                             (5.0e9, 256, 0.31, 989.4)]:
        want = _achieved(macs, b, s, peak)
        mistakes = {
            "MACs taken for FLOPs (device peaks count a multiply-accumulate as 2)": want / 2,
            "the batch forgotten (the time is for the whole batch)": want / b,
            "TFLOP/s and GFLOP/s mixed up (a factor of 1000)": want * 1000,
        }
        _check_number(fn(macs, b, s, peak), want,
                      f"{macs / 1e9:.2f} GMACs x batch {b} in {s * 1e3:.0f} ms on "
                      f"{peak} TFLOP/s", mistakes)


def _fraction_with_macs(macs_per_image, batch, seconds, peak_tflops):
    return _achieved(macs_per_image, batch, seconds, peak_tflops) / 2


# ----------------------------------------------------------------------------- 3. memory


def _max_batch(params, activation_bytes_per_image, budget_bytes, reserve_bytes):
    fixed = 4 * params * 4          # fp32 weights, gradients and AdamW's two states
    return int((budget_bytes - reserve_bytes - fixed) // activation_bytes_per_image)


def check_max_batch(fn) -> None:
    """``fn(params, activation_bytes_per_image, budget_bytes, reserve_bytes)``: the largest
    training batch that fits: the budget, minus the reserve (CUDA context, workspaces),
    minus fp32 weights, their gradients and AdamW's two states per weight, divided by the
    activations saved per image (rounded down)."""
    cases = [(28.6e6, 60e6, 16e9, 1.5e9), (3.7e6, 25e6, 16e9, 1.5e9),
             (88.6e6, 240e6, 80e9, 2e9), (5.0e6, 27e6, 16e9, 1.5e9)]
    mistakes = {   # each: the answer that mistake gives in a case
        "the optimizer's two states per weight left out":
            lambda p, a, room, budget: int((room - 8 * p) // a),
        "the gradients left out": lambda p, a, room, budget: int((room - 12 * p) // a),
        "the weights counted once, with nothing for training":
            lambda p, a, room, budget: int((room - 4 * p) // a),
        "the reserve left out": lambda p, a, room, budget: int((budget - 16 * p) // a),
        "the batch rounded to the nearest integer instead of down":
            lambda p, a, room, budget: round((room - 16 * p) / a),
    }
    answers, wrong = [], None
    for p, a, budget, reserve in cases:
        got = fn(p, a, budget, reserve)
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        answers.append(got)
        want = _max_batch(p, a, budget, reserve)
        if got != want and wrong is None:
            wrong = (p, a, budget, got, want)
    if wrong is None:
        return
    # a mistake is named only when it gives the student's answer in every case
    named = [m for m, f in mistakes.items()
             if all(got == f(p, a, b - r, b) for got, (p, a, b, r) in zip(answers, cases))]
    p, a, budget, got, want = wrong
    extra = f": that is the answer with {' / '.join(named)}" if named else ""
    raise CheckFailed(f"{p / 1e6:.1f} M parameters, {a / 1e6:.0f} MB per image, "
                      f"{budget / 1e9:.0f} GB: you give {got!r}, the answer is "
                      f"{want}{extra}")


def _max_batch_rounded(params, activation_bytes_per_image, budget_bytes, reserve_bytes):
    room = budget_bytes - reserve_bytes - 16 * params
    return round(room / activation_bytes_per_image)


def _max_batch_without_optimizer(params, activation_bytes_per_image, budget_bytes,
                                 reserve_bytes):
    return int((budget_bytes - reserve_bytes - 8 * params) // activation_bytes_per_image)


register(
    Exercise("conv_intensity", 7, 1, check_conv_intensity, reference=lambda: _intensity,
             mistakes={"MACs counted instead of FLOPs": lambda: _intensity_as_macs,
                       "a bias read with the weights": lambda: _intensity_with_bias,
                       "elements counted instead of bytes": lambda: _intensity_in_elements},
             summary="FLOPs per byte of a k x k convolution, depthwise or dense, fp32"),
    Exercise("fraction_of_peak", 7, 2, check_fraction_of_peak, reference=lambda: _achieved,
             mistakes={"MACs taken for FLOPs": lambda: _fraction_with_macs},
             summary="achieved FLOP/s of a timed model as a fraction of the device's peak"),
    Exercise("max_batch", 7, 3, check_max_batch, reference=lambda: _max_batch,
             mistakes={"the optimizer's two states per weight left out":
                       lambda: _max_batch_without_optimizer,
                       "rounded to the nearest integer": lambda: _max_batch_rounded},
             summary="the largest training batch that fits a memory budget, AdamW states counted"),
)
