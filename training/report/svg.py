"""A minimal SVG canvas for the report's figures (no plotting library): shapes, text, and a panel's axes."""

from __future__ import annotations

import html
import math

FONT = "font-family='DejaVu Sans, Arial, sans-serif'"


class Svg:
    """A minimal SVG canvas: shapes and text in pixel coordinates."""

    def __init__(self, width: int, height: int, title: str = ""):
        self.width, self.height = width, height
        self.parts = [f"<rect width='{width}' height='{height}' fill='white'/>"]
        if title:
            self.text(width / 2, 20, title, size=14, anchor="middle", weight="bold")

    def line(self, x1, y1, x2, y2, colour="#000", width=1.0, dash=""):
        d = f" stroke-dasharray='{dash}'" if dash else ""
        self.parts.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{colour}' "
                          f"stroke-width='{width}'{d}/>")

    def polyline(self, points, colour, width=2.0):
        if points:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            self.parts.append(f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='{width}'/>")

    def rect(self, x, y, w, h, fill, stroke="none", opacity=1.0):
        self.parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' fill='{fill}' "
                          f"stroke='{stroke}' fill-opacity='{opacity}'/>")

    def circle(self, x, y, r, fill, stroke="none", opacity=1.0):
        self.parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r}' fill='{fill}' stroke='{stroke}' "
                          f"fill-opacity='{opacity}'/>")

    def diamond(self, x, y, r, fill, stroke="#000"):
        pts = f"{x:.1f},{y - r:.1f} {x + r:.1f},{y:.1f} {x:.1f},{y + r:.1f} {x - r:.1f},{y:.1f}"
        self.parts.append(f"<polygon points='{pts}' fill='{fill}' stroke='{stroke}' stroke-width='1'/>")

    def text(self, x, y, s, size=11, anchor="start", colour="#000", weight="normal", rotate=0.0):
        r = f" transform='rotate({rotate} {x:.1f} {y:.1f})'" if rotate else ""
        self.parts.append(f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' fill='{colour}' "
                          f"font-weight='{weight}' {FONT}{r}>{html.escape(str(s))}</text>")

    def render(self) -> str:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' height='{self.height}' "
                f"viewBox='0 0 {self.width} {self.height}'>\n" + "\n".join(self.parts) + "\n</svg>\n")


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def axes(svg: Svg, box, xr, yr, xlabel="", ylabel=""):
    """Frame, ticks and labels of a panel; returns the data-to-pixel mapping."""
    x0, y0, w, h = box
    (xa, xb), (ya, yb) = xr, yr

    def px(x, y):
        return x0 + (x - xa) / ((xb - xa) or 1) * w, y0 + h - (y - ya) / ((yb - ya) or 1) * h

    svg.rect(x0, y0, w, h, "none", stroke="#444")
    for t in ticks(ya, yb):
        _, y = px(xa, t)
        svg.line(x0, y, x0 + w, y, "#ddd", 0.8)
        svg.text(x0 - 5, y + 4, f"{t:g}", size=10, anchor="end")
    for t in ticks(xa, xb, min(8, max(1, int(xb - xa)))):
        if float(t).is_integer():
            x, _ = px(t, ya)
            svg.line(x, y0 + h, x, y0 + h + 4, "#444")
            svg.text(x, y0 + h + 16, f"{t:g}", size=10, anchor="middle")
    if xlabel:
        svg.text(x0 + w / 2, y0 + h + 32, xlabel, anchor="middle")
    if ylabel:
        svg.text(x0 - 38, y0 + h / 2, ylabel, anchor="middle", rotate=-90)
    return px
