"""infra.prometheus: the typed registry and its text exposition (format 0.0.4)."""

from __future__ import annotations

import math
import threading

from safeloop.infra.prometheus import (
    CONTENT_TYPE,
    CallbackGauge,
    Counter,
    Gauge,
    Histogram,
    Registry,
)


def test_counter_and_gauge_render_help_type_and_sorted_labelled_samples() -> None:
    registry = Registry()
    requests = registry.register(Counter("reqs_total", "Requests.", ("model", "route")))
    ready = registry.register(Gauge("ready", "1 when ready."))
    requests.inc(("m", "production"))
    requests.inc(("m", "canary"), 2)
    requests.inc(("m", "production"))
    ready.set((), 1)
    assert requests.value(("m", "production")) == 2
    assert registry.render() == (
        "# HELP reqs_total Requests.\n"
        "# TYPE reqs_total counter\n"
        'reqs_total{model="m",route="canary"} 2\n'
        'reqs_total{model="m",route="production"} 2\n'
        "# HELP ready 1 when ready.\n"
        "# TYPE ready gauge\n"
        "ready 1\n"
    )


def test_label_values_are_escaped() -> None:
    registry = Registry()
    counter = registry.register(Counter("c_total", "C.", ("reason",)))
    counter.inc(('say "hi"\\\nbye',))
    assert 'c_total{reason="say \\"hi\\"\\\\\\nbye"} 1' in registry.render()


def test_numbers_integers_floats_infinities_and_nan() -> None:
    registry = Registry()
    gauge = registry.register(Gauge("g", "G.", ("k",)))
    for key, value in (("a", 3.0), ("b", 0.25), ("c", math.inf), ("d", -math.inf), ("e", math.nan)):
        gauge.set((key,), value)
    lines = registry.render().splitlines()[2:]
    assert lines == [
        'g{k="a"} 3',
        'g{k="b"} 0.25',
        'g{k="c"} +Inf',
        'g{k="d"} -Inf',
        'g{k="e"} NaN',
    ]


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    latency = registry.register(Histogram("lat_seconds", "Latency.", (0.5, 0.1), ("model",)))
    for value in (0.05, 0.1, 0.3, 2.0):
        latency.observe(("m",), value)
    assert registry.render().splitlines()[2:] == [
        'lat_seconds_bucket{model="m",le="0.1"} 2',
        'lat_seconds_bucket{model="m",le="0.5"} 3',
        'lat_seconds_bucket{model="m",le="+Inf"} 4',
        'lat_seconds_sum{model="m"} 2.45',
        'lat_seconds_count{model="m"} 4',
    ]


def test_callback_gauge_reads_at_scrape_time_with_its_declared_kind() -> None:
    owned = {"n": 1}
    registry = Registry()
    registry.register(
        CallbackGauge("owned_total", "Owned.", lambda: {("x",): owned["n"]}, ("k",), "counter")
    )
    registry.register(CallbackGauge("absent", "Nothing yet.", dict))
    assert 'owned_total{k="x"} 1' in registry.render()
    owned["n"] = 7
    text = registry.render()
    assert "# TYPE owned_total counter" in text
    assert 'owned_total{k="x"} 7' in text
    # A family with no samples still has its header, and nothing else.
    assert text.endswith("# HELP absent Nothing yet.\n# TYPE absent gauge\n")


def test_concurrent_increments_are_not_lost() -> None:
    counter = Counter("n_total", "N.")

    def bump() -> None:
        for _ in range(10_000):
            counter.inc()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value() == 40_000


def test_content_type_is_the_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
