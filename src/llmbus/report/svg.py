"""The building blocks of the report's charts: escaping, scales, axes, legends and shapes.

Every function returns SVG markup as a string and does no I/O. Every value that comes from data
(a user id, a model name, a budget's name) goes through `esc`: those strings are chosen by
whoever sends requests, and the report is opened in a browser.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Tableau 10: distinct at a glance, and still apart for the common colour blindnesses
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e4e7eb"
WIDTH = 640
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
NONE_LABEL = "(none)"
EDGE = 16  # where the title and the legend start


def esc(value: object) -> str:
    """Text safe in an element and in a quoted attribute."""
    return escape(str(value), quote=True)


def label(value: object) -> str:
    """A group's value as shown: requests without a user or team have None there."""
    return NONE_LABEL if value is None or value == "" else str(value)


def short(text: str, width: int) -> str:
    """Long ids cut to fit the margin; the tooltip keeps them whole."""
    return text if len(text) <= width else text[: width - 1] + "…"


def num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class Frame:
    """The chart's canvas and, inside its margins, the plot area."""

    height: int
    left: int = 80
    right: int = 16
    top: int = 56
    bottom: int = 44
    width: int = WIDTH

    @property
    def x0(self) -> int:
        return self.left

    @property
    def x1(self) -> int:
        return self.width - self.right

    @property
    def y0(self) -> int:  # the baseline: SVG's y grows downwards
        return self.height - self.bottom

    @property
    def y1(self) -> int:
        return self.top

    def y(self, value: float, top: float) -> float:
        return self.y0 - (self.y0 - self.y1) * (value / top if top else 0)

    def x(self, value: float, top: float) -> float:
        return self.x0 + (self.x1 - self.x0) * (value / top if top else 0)


def chart(name: str, title: str, frame: Frame, body: Sequence[str]) -> str:
    """The <svg> element: data-chart names it for tests and the console, <title> and
    aria-label describe it, and a visible title heads it."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{esc(name)}" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" '
        f'height="{frame.height}" role="img" aria-label="{esc(title)}" '
        f'font-family="{esc(FONT)}" font-size="11" fill="{INK}">'
        f"<title>{esc(title)}</title>"
        f'<text x="{EDGE}" y="22" font-size="15" font-weight="600">{esc(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def no_data(name: str, title: str) -> str:
    """An empty chart still shows its title and a framed "no data", never a blank hole."""
    frame = Frame(height=160, left=EDGE, right=EDGE)
    box = (
        f'<rect x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" '
        f'height="{frame.y0 - frame.y1}" fill="#f8f9fa" stroke="{GRID}" stroke-dasharray="4 4"/>'
    )
    middle = (frame.y0 + frame.y1) / 2 + 4
    note = text(
        (frame.x0 + frame.x1) / 2, middle, "no data", anchor="middle", fill=MUTED, font_size="13"
    )
    return chart(name, title, frame, [box, note])


def nice_ceiling(value: float) -> float:
    """The axis' top: the smallest 1, 2, 2.5 or 5 times a power of ten at or above value."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def ticks(top: float, count: int = 4) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def text(x: float, y: float, content: object, anchor: str = "start", **attrs: object) -> str:
    extra = "".join(f' {key.replace("_", "-")}="{esc(value)}"' for key, value in attrs.items())
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{extra}>{esc(content)}</text>'


def rect(x: float, y: float, width: float, height: float, fill: str, tip: str = "") -> str:
    """A bar; its tooltip is a <title> child, which browsers show on hover."""
    title = f"<title>{esc(tip)}</title>" if tip else ""
    return (
        f'<rect x="{num(x)}" y="{num(y)}" width="{num(max(width, 0))}" '
        f'height="{num(max(height, 0))}" fill="{esc(fill)}">{title}</rect>'
    )


def line(x1: float, y1: float, x2: float, y2: float, stroke: str = GRID) -> str:
    return f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{stroke}"/>'


def y_axis(frame: Frame, top: float, fmt: Callable[[float], str], title: str) -> list[str]:
    """Horizontal gridlines with their values, and the axis' name turned along it."""
    parts = []
    for tick in ticks(top):
        y = frame.y(tick, top)
        parts.append(line(frame.x0, y, frame.x1, y, INK if tick == 0 else GRID))
        parts.append(text(frame.x0 - 6, y + 4, fmt(tick), anchor="end", fill=MUTED))
    middle = (frame.y0 + frame.y1) / 2
    parts.append(
        f'<text x="14" y="{num(middle)}" text-anchor="middle" fill="{MUTED}" '
        f'transform="rotate(-90 14 {num(middle)})">{esc(title)}</text>'
    )
    return parts


def x_axis(frame: Frame, top: float, fmt: Callable[[float], str], title: str) -> list[str]:
    """Vertical gridlines with their values under the plot, for horizontal bars."""
    parts = []
    for tick in ticks(top):
        x = frame.x(tick, top)
        parts.append(line(x, frame.y1, x, frame.y0, INK if tick == 0 else GRID))
        parts.append(text(x, frame.y0 + 14, fmt(tick), anchor="middle", fill=MUTED))
    middle = (frame.x0 + frame.x1) / 2
    parts.append(text(middle, frame.height - 6, title, anchor="middle", fill=MUTED))
    return parts


def category_labels(frame: Frame, names: Sequence[str], centers: Sequence[float]) -> list[str]:
    """Names under the bars: every k-th one when they would not fit side by side, each cut to
    the room it has (at about 6.5 px a character)."""
    slot = (frame.x1 - frame.x0) / max(len(names), 1)
    step = max(1, math.ceil(76 / slot))
    room = max(6, int(slot * step / 6.5) - 1)
    return [
        text(center, frame.y0 + 14, short(name, room), anchor="middle", fill=MUTED)
        for i, (name, center) in enumerate(zip(names, centers, strict=True))
        if i % step == 0
    ]


def legend_layout(items: Sequence[tuple[str, str]]) -> list[tuple[str, str, float, float]]:
    """Where each swatch goes: in rows under the title, wrapping when a row is full."""
    placed, x, y = [], float(EDGE), 40.0
    for name, colour in items:
        width = 18 + 6.5 * len(short(name, 28))
        if x + width > WIDTH - EDGE and x > EDGE:
            x, y = float(EDGE), y + 14
        placed.append((name, colour, x, y))
        x += width + 12
    return placed


def legend_top(items: Sequence[tuple[str, str]]) -> int:
    """The plot's top margin, below however many rows the legend takes."""
    rows = {y for *_, y in legend_layout(items)}
    return 44 + 14 * len(rows)


def legend(items: Sequence[tuple[str, str]]) -> list[str]:
    parts = []
    for name, colour, x, y in legend_layout(items):
        parts.append(f'<rect x="{num(x)}" y="{num(y - 9)}" width="10" height="10" rx="2" '
                     f'fill="{esc(colour)}"><title>{esc(name)}</title></rect>')  # fmt: skip
        parts.append(text(x + 14, y, short(name, 28)))
    return parts


def bands(frame: Frame, count: int) -> tuple[list[float], float]:
    """Centres of `count` equal slots across the plot, and a bar width that fits one."""
    slot = (frame.x1 - frame.x0) / max(count, 1)
    centers = [frame.x0 + slot * (i + 0.5) for i in range(count)]
    return centers, min(slot * 0.7, 56.0)
