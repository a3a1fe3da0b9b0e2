"""The soak's plot: resident memory per process and consumer lag over the run, drawn as SVG and
rendered to PNG by headless Chromium (the one the dashboard's browser test uses); no plotting
library is needed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 1000, 720
_LEFT, _RIGHT = 70, 220
_PANELS = ((70, 390), (450, 660))  # (top, bottom) of the memory and the lag panel
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def _panel(
    title: str, series: dict[str, list[tuple[float, float]]], top: int, bottom: int, unit: str,
    minutes: float, events: list[Any],
) -> list[str]:  # fmt: skip
    right = WIDTH - _RIGHT
    peak = max((y for points in series.values() for _, y in points), default=1.0) or 1.0
    peak *= 1.1

    def x(minute: float) -> float:
        return _LEFT + (right - _LEFT) * minute / max(minutes, 1e-9)

    def y(value: float) -> float:
        return bottom - (bottom - top) * value / peak

    parts = [
        f'<text x="{_LEFT}" y="{top - 10}" font-size="15">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{top}" width="{right - _LEFT}" height="{bottom - top}" '
        'fill="none" stroke="#999"/>',
    ]
    for tick in range(5):
        value = peak * tick / 4
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y(value) + 4:.1f}" font-size="11" text-anchor="end">'
            f"{value:,.0f}</text>"
        )
    for tick in range(int(minutes) + 1):
        if minutes > 10 and tick % 5:
            continue
        parts.append(
            f'<text x="{x(tick):.1f}" y="{bottom + 14}" font-size="11" text-anchor="middle">'
            f"{tick}</text>"
        )
    parts += [
        f'<text x="{(right + _LEFT) / 2}" y="{bottom + 30}" font-size="12" '
        'text-anchor="middle">minutes</text>',
        f'<text x="{right}" y="{top - 10}" font-size="11" text-anchor="end">{escape(unit)}</text>',
    ]
    for index, (minute, what) in enumerate(events):
        parts.append(
            f'<line x1="{x(minute):.1f}" y1="{top}" x2="{x(minute):.1f}" y2="{bottom}" '
            'stroke="#d00" stroke-dasharray="4 3"/>'
            f'<text x="{x(minute) + 4:.1f}" y="{top + 14 + 14 * index}" font-size="11" fill="#d00">'
            f"{escape(what)}</text>"
        )
    for index, (name, points) in enumerate(sorted(series.items())):
        colour = _COLOURS[index % len(_COLOURS)]
        path = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{right + 10}" y="{top + 16 + 16 * index}" font-size="12" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    return parts


def render_svg(results: dict[str, Any]) -> str:
    samples = results["samples"]
    minutes = max((s["minute"] for s in samples), default=1.0)
    memory: dict[str, list[tuple[float, float]]] = {}
    lag: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for name, mb in sample["rss_mb"].items():
            memory.setdefault(name, []).append((sample["minute"], mb))
        for group, behind in sample["lag"].items():
            if behind >= 0:
                lag.setdefault(group[-28:], []).append((sample["minute"], behind))
    events = results.get("events", [])
    sent_per_s = (samples[-1]["sent"] - samples[0]["sent"]) / max(minutes * 60, 1e-9)
    head = (
        f"soak: {results['minutes']:g} min at {results['rate_requests_per_s']:g} requests/s "
        f"({sent_per_s:.0f} achieved); "
        f"worst memory growth over the last {results['growth_last_minutes']:g} min "
        f"{results.get('worst_trend_growth', results['worst_growth']):.1%} fitted, "
        f"{results['worst_growth']:.1%} first to last (limit {results['limit']:.0%})"
    )
    body = [f'<text x="{_LEFT}" y="20" font-size="14" font-weight="bold">{escape(head)}</text>']
    body += _panel("resident memory per process", memory, *_PANELS[0], "MB", minutes, events)
    body += _panel("consumer lag per group", lag, *_PANELS[1], "messages", minutes, events)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "".join(body)
        + "</svg>"
    )


def write_plot(results: dict[str, Any], png: Path) -> Path:
    """Write `png` (and the SVG beside it); the SVG alone when no Chromium is installed."""
    svg = png.with_suffix(".svg")
    svg.write_text(render_svg(results))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return svg
    with tempfile.TemporaryDirectory(prefix="soak-plot-") as profile:
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu",
                f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={png}", "--hide-scrollbars", svg.resolve().as_uri(),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return png
