"""safeloop: feedback loops and safe deployment for ML models on Apache Kafka and ClickHouse.

The repository's top-level folders are this package's subpackages once installed
(`safeloop.schemas`, `safeloop.infra`, `safeloop.streams`, `safeloop.services`); pyproject.toml
maps them, so a user's environment gets one top-level name.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("safeloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


class SafeloopError(Exception):
    """Root of every error safeloop raises on purpose; each package's exceptions subclass it."""


__all__ = ["SafeloopError", "__version__"]
