"""One plotting style for every chapter.

Figures have an opaque white background, so they stay readable when the
book is shown in a dark theme; lines carry markers and a colour-blind-safe
palette, so they survive greyscale printing; every timing plot names the
device it was measured on (``device_note``).

Figures are at most ``MAX_WIDTH`` inches wide: the page shows an image no wider than its
column, so a wider figure would be scaled down, and its text with it (a five-panel figure
13 inches wide shows 11-point labels at about 6 pixels).  ``subplots`` shrinks the panels
instead, never the text.
"""

from __future__ import annotations

from typing import Iterable, Optional

import matplotlib
import matplotlib.pyplot as plt

#: Okabe-Ito colour-blind-safe palette
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

STYLE = {
    "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
    "savefig.transparent": False, "text.color": "#111111", "axes.labelcolor": "#111111",
    "axes.edgecolor": "#333333", "xtick.color": "#333333", "ytick.color": "#333333",
    "axes.grid": True, "grid.color": "#dddddd", "grid.linewidth": 0.8,
    "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "font.size": 11, "axes.titlesize": 12, "legend.fontsize": 9, "legend.framealpha": 1.0,
    "lines.linewidth": 2.0, "lines.markersize": 6, "figure.dpi": 110, "savefig.dpi": 150,
    "figure.constrained_layout.use": True,
}


def use_style() -> None:
    """Apply the book's style to every later figure."""
    plt.rcParams.update(STYLE)


#: The widest figure, in inches, that the page shows at full size (about 800 pixels).
MAX_WIDTH = 7.5


def subplots(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.0, **kw):
    """``plt.subplots`` in the book's style, sized per panel (``width`` x ``height``
    inches each); a figure wider than ``MAX_WIDTH`` has its panels scaled down, keeping
    their shape and the size of the text."""
    use_style()
    total_w, total_h = width * ncols, height * nrows
    if total_w > MAX_WIDTH:
        total_w, total_h = MAX_WIDTH, total_h * MAX_WIDTH / total_w
    return plt.subplots(nrows, ncols, figsize=(total_w, total_h), **kw)


def log_ticks(ax, axis: str = "y") -> None:
    """Readable ticks on a log axis (``axis``: 'x', 'y' or 'both'): labels at 1, 2 and 5
    times powers of ten, written as plain numbers, and no minor ticks.  Matplotlib's
    default labels only powers of ten, so an axis spanning less than a decade would have
    no labels at all."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    for a in ([ax.xaxis, ax.yaxis] if axis == "both" else [getattr(ax, f"{axis}axis")]):
        lo, hi = sorted(a.get_view_interval())
        subs = (1, 2, 5) if hi / max(lo, 1e-300) > 2.5 else (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)
        a.set_major_locator(LogLocator(base=10, subs=subs))
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_minor_locator(NullLocator())


def line_style(i: int) -> dict:
    """Colour, marker and dash of the i-th line: the palette's 8 colours with their own
    markers first; past 8, the colours come round again with another marker and a
    dashed line, so no two of the first 64 lines look alike.

    >>> line_style(0) == line_style(8)
    False
    """
    turn = i // len(PALETTE)
    return {"color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[(i + turn) % len(MARKERS)],
            "linestyle": "-" if turn % 2 == 0 else "--"}


def line(ax, x: Iterable, y: Iterable, label: str, i: int = 0, **kw):
    """A line with the i-th style of :func:`line_style`."""
    alias = {"color": "c", "linestyle": "ls"}   # matplotlib refuses a key and its alias
    for k, v in line_style(i).items():
        if alias.get(k) not in kw:
            kw.setdefault(k, v)
    return ax.plot(list(x), list(y), label=label, **kw)


def device_note(ax, text: str, loc: str = "lower right") -> None:
    """Write where a figure was measured in a corner of the axes."""
    x, ha = (0.99, "right") if "right" in loc else (0.01, "left")
    y, va = (0.01, "bottom") if "lower" in loc else (0.99, "top")
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=8, color="#444444",
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#bbbbbb"))


def label(ax, xlabel: str, ylabel: str, title: Optional[str] = None, legend: bool = True) -> None:
    """Axis labels (with units), an optional title, and a legend if there are labels."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()


# ---------------------------------------------------------------- block diagrams


def describe_layer(m) -> str:
    """A short name for one layer of a block, read from the module (a string is its
    own name): ``"conv 3×3/2, 3→32 + BN + GELU"``, ``"depthwise 3×3"``, ``"BN"``."""
    import torch.nn as nn

    if isinstance(m, str):
        return m
    if isinstance(m, nn.Sequential) and hasattr(m, "conv"):       # ConvNormAct
        parts = [describe_layer(m.conv)]
        if hasattr(m, "norm"):
            parts.append("BN" if isinstance(m.norm, nn.BatchNorm2d) else "LN")
        if hasattr(m, "act"):
            parts.append(type(m.act).__name__)
        return " + ".join(parts)
    if isinstance(m, nn.Conv2d):
        k, s = m.kernel_size[0], m.stride[0]
        ks = f"{k}×{k}" + (f"/{s}" if s > 1 else "")
        if m.groups == m.in_channels == m.out_channels > 1:
            return f"depthwise {ks}"
        return f"conv {ks}, {m.in_channels}→{m.out_channels}"
    if isinstance(m, nn.BatchNorm2d):
        return "BN"
    if isinstance(m, nn.AvgPool2d):
        return "avg-pool 2×2/2"
    return type(m).__name__


def _output_shapes(module, x, layers) -> tuple:
    """Run ``module`` on ``x`` once; each listed layer's output shape (without the
    batch), by ``id``, and the module's output."""
    import torch
    import torch.nn as nn

    shapes = {}
    record = lambda m, i, o: shapes.__setitem__(id(m), tuple(o.shape[1:]))
    hooks = [l.register_forward_hook(record) for l in layers if isinstance(l, nn.Module)]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, out


class _Diagram:
    """Boxes and arrows in data coordinates on ``ax`` (one box is 2.9 x 0.68)."""

    def __init__(self, ax):
        self.ax = ax

    def box(self, xc: float, yc: float, text: str, shape, color: str) -> None:
        from matplotlib.patches import FancyBboxPatch

        self.ax.add_patch(FancyBboxPatch(
            (xc - 1.45, yc - 0.34), 2.9, 0.68, facecolor=color, edgecolor="#333333",
            boxstyle="round,pad=0.02,rounding_size=0.1"))
        self.ax.text(xc, yc + 0.1, text, ha="center", va="center", fontsize=8.5)
        self.ax.text(xc, yc - 0.18, "×".join(str(int(v)) for v in shape), ha="center",
                     va="center", fontsize=7.5, color="#555555")

    def arrow(self, x0: float, y0: float, x1: float, y1: float, **kw) -> None:
        self.ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(
            arrowstyle="->", color=kw.pop("color", "#333333"), lw=1, **kw))


def block_diagram(ax, module, x, branches, trunk=(), after=(), merge: str = "+",
                  title: str = "", residual: bool = False):
    """Draw ``module`` on ``ax`` as it computes ``x``: the input, the ``trunk`` layers,
    two parallel ``branches`` (label -> a list of layers, or strings for steps that are
    no module, shown with the module's output shape), a ``merge`` node, then the
    ``after`` layers; a dashed ``residual`` path from the input into the merge.  Every
    shape is the layer's output, recorded by forward hooks (chapter 6's HR-stem,
    HR-block and IRDS figures).  Returns the module's output.

    A layer that does not run in ``module``'s forward has no shape: a ``ValueError``.
    """
    from matplotlib.patches import Circle

    if len(branches) != 2:
        raise ValueError(f"block_diagram draws two branches, got {len(branches)}")
    layers = list(trunk) + [l for b in branches.values() for l in b] + list(after)
    shapes, out = _output_shapes(module, x, layers)
    missing = [describe_layer(l) for l in layers
               if not isinstance(l, str) and id(l) not in shapes]
    if missing:
        raise ValueError(f"these layers did not run in the module's forward: {missing}")
    shape_of = lambda l: tuple(out.shape[1:]) if isinstance(l, str) else shapes[id(l)]
    d, y = _Diagram(ax), 0.0
    d.box(0, y, "input", x.shape[1:], "#eeeeee")
    for l in trunk:
        d.arrow(0, y - 0.36, 0, y - 1 + 0.36)
        y -= 1
        d.box(0, y, describe_layer(l), shape_of(l), "#dbe9f6")
    top, ends = y, []
    for (label, ls), xc, color in zip(branches.items(), (-1.7, 1.7),
                                      ("#fde3c8", "#d5efe4")):
        ax.text(xc, top - 0.55, label, ha="center", fontsize=9, style="italic")
        yb = top
        for l in ls:
            step = 1.1 if yb == top else 1.0
            d.arrow(0 if yb == top else xc, yb - 0.36, xc, yb - step + 0.36)
            yb -= step
            d.box(xc, yb, describe_layer(l), shape_of(l), color)
        ends.append((xc, yb))
    ym = min(yb for _, yb in ends) - 1
    for xc, yb in ends:
        d.arrow(xc, yb - 0.36, 0, ym + 0.25)
    ax.add_patch(Circle((0, ym), 0.25, facecolor="white", edgecolor="#333333"))
    ax.text(0, ym, merge, ha="center", va="center", fontsize=12)
    if residual:   # a dashed path around the right branch, into the merge
        ax.plot([1.45, 3.5, 3.5], [0.0, 0.0, ym], color="#777777", lw=1, ls="--")
        d.arrow(3.5, ym, 0.25, ym, color="#777777", ls="--")
        ax.text(3.6, ym / 2, "residual", fontsize=8, color="#555555", rotation=90,
                va="center")
    y = ym
    for l in after:
        d.arrow(0, y + 0.1 - 0.36, 0, y - 1 + 0.36)
        y -= 1
        d.box(0, y, describe_layer(l), shape_of(l), "#dbe9f6")
    ax.set_xlim(-3.3, 3.9)
    ax.set_ylim(y - 0.6, 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return out
