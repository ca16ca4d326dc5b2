"""Arithmetic intensity of the operations the book's models are made of (chapter 7).

The intensity of an operation is the work it does per byte it must move to and from
memory: FLOPs (a multiply-accumulate counts as 2, as device peaks count them) divided by
the bytes of its inputs, weights and outputs, each read or written once (the minimum
any implementation moves).  With a device's peak rate P (FLOP/s) and bandwidth B
(bytes/s), an operation of intensity I runs at most at min(P, I B): below P / B it is
*memory-bound*, whatever its FLOP count says.

>>> round(op_cost("dwconv", channels=64, height=56, width=56, kernel=3)["intensity"], 2)
2.25
>>> op_cost("layernorm")["intensity"]     # 5 operations per 8 bytes, whatever the size
0.625
"""

from __future__ import annotations

from typing import Dict


def op_cost(kind: str, channels: int = 64, height: int = 56, width: int = 56, batch: int = 1,
            kernel: int = 3, expansion: int = 4, heads: int = 1, kv_tokens: int = 0,
            bytes_per_element: int = 4) -> Dict[str, float]:
    """FLOPs, bytes and intensity (FLOPs per byte) of one operation on a
    ``(batch, channels, height, width)`` map, fp32 by default.

    kinds:
      ``"dwconv"``      depthwise k x k conv (k^2 MACs per output element)
      ``"conv"``        dense k x k conv, C -> C (k^2 C MACs per output element)
      ``"pwconv"``      1x1 conv / Linear C -> expansion * C (an FFN's first layer)
      ``"attention"``   Q K^T and A V over N = H W queries and M keys (M = N unless
                        ``kv_tokens``), d = C / heads, with the N x M matrix written once
                        and read once per head
      ``"layernorm"``   5 operations per element (the papers' count), read and write
      ``"batchnorm"``   inference: 2 per element, read and write
      ``"rearrange"``   a pure reshuffle (Hire-MLP's fold, a transpose): no arithmetic
    """
    N = height * width
    C = channels
    b = bytes_per_element
    if kind == "dwconv":
        macs, weights, ins, outs = N * C * kernel ** 2, C * kernel ** 2, N * C, N * C
    elif kind == "conv":
        macs, weights, ins, outs = N * C * C * kernel ** 2, C * C * kernel ** 2, N * C, N * C
    elif kind == "pwconv":
        E = expansion * C
        macs, weights, ins, outs = N * C * E, C * E, N * C, N * E
    elif kind == "attention":
        M = kv_tokens or N
        d = C // heads
        macs = 2 * heads * N * M * d
        weights, ins, outs = 0, N * C + 2 * M * C, N * C + 2 * heads * N * M
    elif kind == "layernorm":
        return _cost(2.5 * N * C * batch, b * 2 * N * C * batch)  # 5 ops = 2.5 MACs
    elif kind == "batchnorm":
        return _cost(1.0 * N * C * batch, b * 2 * N * C * batch)
    elif kind == "rearrange":
        return _cost(0.0, b * 2 * N * C * batch)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose dwconv, conv, pwconv, attention, "
                         f"layernorm, batchnorm or rearrange")
    return _cost(macs * batch, b * (weights + batch * (ins + outs)))


def _cost(macs: float, nbytes: float) -> Dict[str, float]:
    flops = 2 * macs
    return {"macs": macs, "flops": flops, "bytes": nbytes,
            "intensity": flops / nbytes if nbytes else float("inf")}
