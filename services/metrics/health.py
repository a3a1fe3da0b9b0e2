"""Request volume, error rate and latency percentiles of one window -> `HealthSnapshot`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics._arrays import as_float, same_length
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.latency import percentiles
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, Columns

# The columns a health window holds: `error` is True when the request failed on the model's
# side (5xx), `client_error` when it failed because of the request (4xx).
HEALTH_COLUMNS: Final = {
    TIMESTAMP_COLUMN: np.int64,
    "latency_ms": np.float64,
    "error": np.bool_,
    "client_error": np.bool_,
}


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """How one model version on one route is doing; rates and latencies None when empty.

    Latency percentiles cover every request, failed ones included, so that timeouts count.
    `error_*` are server-side failures (the model's); `client_error_*` are requests the model
    could not answer because of the caller (4xx), judged only against production's rate.
    """

    request_count: int
    error_count: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    requests_per_s: float | None
    window_start_ms: int | None
    window_end_ms: int | None
    client_error_count: int = 0
    client_error_rate: float | None = None


def health_snapshot(
    latency_ms: npt.ArrayLike,
    error: npt.ArrayLike,
    timestamp_ms: npt.ArrayLike | None = None,
    span_ms: int | None = None,
    client_error: npt.ArrayLike | None = None,
) -> HealthSnapshot:
    """Health of the given requests; `span_ms` (time windows) fixes the rate's denominator.

    Without `span_ms` the rate is count / (newest - oldest timestamp), None under two requests.
    """
    latencies = as_float(latency_ms, "latency_ms")
    errors = np.asarray(error, dtype=np.bool_)
    same_length("latency_ms", latencies, "error", errors)
    count = latencies.shape[0]
    error_count = int(np.count_nonzero(errors))
    client_error_count = 0
    if client_error is not None:
        client_errors = np.asarray(client_error, dtype=np.bool_)
        same_length("latency_ms", latencies, "client_error", client_errors)
        client_error_count = int(np.count_nonzero(client_errors))
    latency = percentiles(latencies)
    start_ms: int | None = None
    end_ms: int | None = None
    if timestamp_ms is not None:
        stamps = np.asarray(timestamp_ms, dtype=np.int64)
        same_length("latency_ms", latencies, "timestamp_ms", stamps)
        if count:
            start_ms, end_ms = int(stamps.min()), int(stamps.max())
    rate: float | None = None
    if span_ms is not None:
        if span_ms <= 0:
            raise InvalidInputError(f"span_ms must be positive, got {span_ms}")
        rate = count * 1000.0 / span_ms
    elif start_ms is not None and end_ms is not None and end_ms > start_ms:
        rate = count * 1000.0 / (end_ms - start_ms)
    return HealthSnapshot(
        request_count=count,
        error_count=error_count,
        error_rate=error_count / count if count else None,
        latency_p50_ms=latency.p50,
        latency_p95_ms=latency.p95,
        latency_p99_ms=latency.p99,
        requests_per_s=rate,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        client_error_count=client_error_count,
        client_error_rate=client_error_count / count if count else None,
    )


def health_of_window(view: Columns, span_ms: int | None = None) -> HealthSnapshot:
    """`health_snapshot` of a window holding `HEALTH_COLUMNS`."""
    return health_snapshot(
        view["latency_ms"], view["error"], view[TIMESTAMP_COLUMN], span_ms, view["client_error"]
    )
