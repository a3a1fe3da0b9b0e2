"""Reading a Prometheus text exposition back: what benchmarks and tests scrape from /metrics."""

from __future__ import annotations

import urllib.request


def parse_samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line (comments and blank lines skipped)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def sample_total(text: str, name: str, *, containing: str = "") -> float:
    """The sum of every sample of metric `name` (all label sets), optionally only the series
    whose text contains `containing` (e.g. a topic label value)."""
    return sum(
        value
        for series, value in parse_samples(text).items()
        if (series == name or series.startswith(name + "{")) and containing in series
    )


def scrape(url: str, timeout_s: float = 5.0) -> str:
    """The exposition text served at `url` (OSError if nothing answers)."""
    # Callers pass their own http://127.0.0.1 endpoints.
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310
        return str(answer.read().decode())


def scrape_total(url: str, name: str, timeout_s: float = 5.0, *, containing: str = "") -> float:
    """`sample_total` of what `url` serves now (OSError if nothing answers)."""
    return sample_total(scrape(url, timeout_s), name, containing=containing)
