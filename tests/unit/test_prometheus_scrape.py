"""Reading an exposition back gives what the registry rendered."""

from __future__ import annotations

import math

from safeloop.infra.prometheus import Counter, Gauge, Registry
from safeloop.infra.prometheus_scrape import parse_samples, sample_total


def _registry() -> Registry:
    registry = Registry()
    lag = registry.register(Gauge("lag", "records behind", ("topic", "partition")))
    lag.set(("predictions", "0"), 5)
    lag.set(("predictions", "1"), 7)
    lag.set(("feedback", "0"), 100)
    registry.register(Counter("lag_resets_total", "a name sharing the prefix")).inc(amount=3)
    registry.register(Gauge("note", "a label value with a space", ("why",))).set(("a b",), 2)
    return registry


def test_every_rendered_sample_parses_back_to_its_value() -> None:
    samples = parse_samples(_registry().render())
    assert samples['lag{topic="predictions",partition="1"}'] == 7
    assert samples['note{why="a b"}'] == 2
    assert samples["lag_resets_total"] == 3
    assert len(samples) == 5


def test_a_total_sums_one_metric_and_not_the_names_it_prefixes() -> None:
    text = _registry().render()
    assert sample_total(text, "lag") == 112
    assert sample_total(text, "lag", containing='"predictions"') == 12
    assert sample_total(text, "lag_resets_total") == 3
    assert sample_total(text, "absent") == 0


def test_special_values_parse_as_floats() -> None:
    samples = parse_samples("# HELP x y\nx +Inf\ny NaN\n\nz -1.5e3\n")
    assert samples["x"] == math.inf and math.isnan(samples["y"]) and samples["z"] == -1500
