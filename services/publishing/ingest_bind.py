"""Who may reach the ingest: loopback needs nothing, any other address needs a token."""

from __future__ import annotations

from safeloop.infra.settings import Secret
from safeloop.infra.warehouse.auth import is_loopback
from safeloop.services.publishing.exceptions import IngestBindError


def check_ingest_bind(host: str, token: Secret) -> None:
    """Refuse to listen beyond loopback without a token to check (as the warehouse does)."""
    if not is_loopback(host) and not token:
        raise IngestBindError(
            f"the ingest would listen on {host}, reachable from other machines: set "
            "SAFELOOP_INGEST_TOKEN so that it can check who publishes, or bind it to 127.0.0.1"
        )
