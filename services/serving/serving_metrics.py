"""The metrics a replica exposes on /metrics, named and labelled in one place."""

from __future__ import annotations

from collections.abc import Callable

from safeloop.infra.prometheus import (
    CallbackGauge,
    CallbackKind,
    Counter,
    Gauge,
    Histogram,
    Labels,
    Registry,
)
from safeloop.services.serving.sink import SinkStats

LATENCY_BOUNDS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServingMetrics:
    """Requests, errors and latency per model, version and route; drops; applied config."""

    def __init__(self) -> None:
        self.registry = Registry()
        route_labels = ("model", "version", "route")
        self.requests = self.registry.register(
            Counter("safeloop_requests_total", "Prediction requests answered.", route_labels)
        )
        self.errors = self.registry.register(
            Counter(
                "safeloop_request_errors_total",
                "Prediction requests that failed, by kind (invalid, model, unknown_model, ...).",
                (*route_labels, "kind"),
            )
        )
        self.latency = self.registry.register(
            Histogram(
                "safeloop_request_latency_seconds",
                "Time to route, score and publish one prediction.",
                LATENCY_BOUNDS_S,
                route_labels,
            )
        )
        self.config_version = self.registry.register(
            Gauge(
                "safeloop_control_config_version",
                "Sequence of the last control command applied, per model.",
                ("model",),
            )
        )
        self.canary_suppressed = self.registry.register(
            Gauge(
                "safeloop_canary_suppressed",
                "1 while this replica's local guard keeps traffic off a breaching canary.",
                ("model", "version"),
            )
        )
        self.ready = self.registry.register(
            Gauge("safeloop_ready", "1 once control state is rebuilt and the replica serves.")
        )

    def watch_sink(self, stats: Callable[[], SinkStats]) -> None:
        def events() -> dict[Labels, float]:
            current = stats()
            return {
                ("accepted",): current.accepted,
                ("delivered",): current.delivered,
                ("dropped_buffer_full",): current.dropped_buffer_full,
                ("delivery_failed",): current.delivery_failed,
            }

        self.registry.register(
            CallbackGauge(
                "safeloop_events_total",
                "Prediction events by fate; dropped_buffer_full and delivery_failed are lost.",
                events,
                ("fate",),
                kind="counter",
            )
        )

    def watch(
        self, name: str, help_text: str, read: Callable[[], float], kind: CallbackKind = "gauge"
    ) -> None:
        """Expose a number owned elsewhere (sink backlog, control refusals), read at scrape time."""
        self.registry.register(CallbackGauge(name, help_text, lambda: {(): read()}, (), kind))
