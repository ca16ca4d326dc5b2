"""``hirilib.book.plot.block_diagram`` (chapter 6's figures): what these tests prove.

* Every box names its layer as the module is built (kernel, stride, widths, norm,
  activation) and shows the shape that layer really outputs (read by forward hooks),
  so a figure cannot drift from the model.
* The module's output comes back unchanged, the hooks are removed afterwards, and a
  layer that does not run in the forward is a clear ``ValueError``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from hirilib.book import plot as hplot  # noqa: E402
from hirilib.models import hiri_vit as hv  # noqa: E402


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_hr_stem_diagram_names_each_layer_with_its_real_output_shape():
    stem = hv.HRStem(3, 32, 24).eval()
    x = torch.zeros(1, 3, 64, 96)
    fig, ax = plt.subplots()
    try:
        out = hplot.block_diagram(ax, stem, x, trunk=[stem.conv],
                                  branches={"high": list(stem.high),
                                            "low": list(stem.low)},
                                  after=[stem.norm], title="HR-stem")
        texts = _texts(ax)
    finally:
        plt.close(fig)
    with torch.no_grad():
        assert torch.equal(out, stem(x))
    assert "conv 3×3/2, 3→24 + BN + GELU" in texts and "24×32×48" in texts
    assert "depthwise 3×3 + BN + GELU" in texts
    assert "conv 3×3/2, 24→32" in texts and "conv 1×1, 32→32" in texts
    assert texts.count("32×16×24") >= 4          # both branches' ends, the sum's BN
    assert "input" in texts and "3×64×96" in texts and "high" in texts
    assert all(not m._forward_hooks for m in stem.modules())


def test_hr_block_diagram_shows_the_strings_with_the_output_shape():
    blk = hv.HRBlock(8, 2).eval()
    fig, ax = plt.subplots()
    try:
        hplot.block_diagram(ax, blk, torch.zeros(1, 8, 10, 10), residual=True,
                            branches={"high": [blk.high],
                                      "low": list(blk.low) + ["nearest ×2"]})
        texts = _texts(ax)
    finally:
        plt.close(fig)
    assert "depthwise 3×3/2 + BN" in texts and "8×5×5" in texts
    assert "conv 1×1, 8→16" in texts and "16×5×5" in texts
    assert "nearest ×2" in texts and "residual" in texts and "GELU" in texts
    assert texts.count("8×10×10") >= 3           # input, high branch, the upsampling


def test_a_layer_that_does_not_run_is_refused():
    blk = hv.HRBlock(8, 2).eval()
    fig, ax = plt.subplots()
    try:
        with pytest.raises(ValueError, match="did not run in the module's forward"):
            hplot.block_diagram(ax, blk, torch.zeros(1, 8, 10, 10),
                                branches={"a": [blk.high], "b": [nn.Conv2d(8, 8, 1)]})
        with pytest.raises(ValueError, match="two branches"):
            hplot.block_diagram(ax, blk, torch.zeros(1, 8, 10, 10),
                                branches={"a": [blk.high]})
    finally:
        plt.close(fig)
    assert hplot.describe_layer(nn.AvgPool2d(2)) == "avg-pool 2×2/2"
