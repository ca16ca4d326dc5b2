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
