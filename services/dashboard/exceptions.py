"""Errors raised by the dashboard: a query it could not run, an asset it cannot serve."""

from __future__ import annotations

from safeloop import SafeloopError


class DashboardError(SafeloopError):
    """Root of every error raised by `services.dashboard`."""


class QueryFailedError(DashboardError):
    """A dashboard query failed; the message names the query and ClickHouse's first line."""


class AssetMissingError(DashboardError):
    """A static asset (plotly.min.js) is not installed; the message says how to install it."""


class BadRequestError(DashboardError, ValueError):
    """A request parameter is out of range or missing (HTTP 400)."""


class DashboardBindError(DashboardError):
    """The dashboard was asked to listen beyond loopback without a password to check."""


class RequestRefusedError(DashboardError):
    """A write request the dashboard refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
