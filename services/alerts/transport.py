"""HTTP delivery of one alert request (stdlib urllib: no client library needed)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Protocol

from safeloop.services.alerts.exceptions import DeliveryFailedError, PermanentDeliveryError

# Statuses worth another try: the receiver is overloaded or briefly away.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Transport(Protocol):
    """Posts a body; raises DeliveryFailedError (retryable or not) unless the target took it."""

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None: ...


class UrllibTransport:
    """A `Transport` over urllib; any 2xx is success."""

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
        request = urllib.request.Request(  # noqa: S310 - targets are the operator's own URLs
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "safeloop", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            retry_after = _retry_after_s(exc.headers.get("Retry-After"))
            reason = f"HTTP {exc.code}"
            if exc.code in RETRYABLE_STATUSES:
                raise DeliveryFailedError(url, reason, retry_after) from exc
            raise PermanentDeliveryError(url, reason) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryFailedError(url, str(getattr(exc, "reason", exc))) from exc


def _retry_after_s(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None
