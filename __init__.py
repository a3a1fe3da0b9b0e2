"""safeloop: feedback loops and safe deployment for ML models on Apache Kafka and ClickHouse.

The repository's top-level folders are this package's subpackages once installed
(`safeloop.schemas`, `safeloop.infra`, `safeloop.streams`, `safeloop.services`); pyproject.toml
maps them, so a user's environment gets one top-level name.
"""


def __getattr__(name: str) -> str:
    """`__version__`, looked up on first use: importlib.metadata would add ~50 ms (far more on
    a loaded machine) to every `safeloop` command's start-up."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("safeloop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


class SafeloopError(Exception):
    """Root of every error safeloop raises on purpose; each package's exceptions subclass it."""


__all__ = ["SafeloopError", "__version__"]
