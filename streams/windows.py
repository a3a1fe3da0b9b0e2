"""Per-model join windows: how long a prediction waits for its outcome (default 30 days)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from safeloop.infra.settings import Settings
from safeloop.streams.exceptions import WindowConfigError

DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_WINDOW_MS = 30 * DAY_MS


@dataclass(frozen=True, slots=True)
class JoinWindows:
    """The join window per model name, and how long an early outcome waits for its prediction."""

    default_window_ms: int = DEFAULT_WINDOW_MS
    model_window_ms: Mapping[str, int] = field(default_factory=dict)
    # None: an early outcome waits as long as the longest window.
    outcome_wait_ms: int | None = None

    def __post_init__(self) -> None:
        values = [self.default_window_ms, *self.model_window_ms.values()]
        if self.outcome_wait_ms is not None:
            values.append(self.outcome_wait_ms)
        if any(value <= 0 for value in values):
            raise WindowConfigError(f"join windows must be positive, got {values}")

    def window_ms(self, model_name: str) -> int:
        """The window of `model_name`, or the default one."""
        return self.model_window_ms.get(model_name, self.default_window_ms)

    @property
    def max_window_ms(self) -> int:
        return max([self.default_window_ms, *self.model_window_ms.values()])

    @property
    def early_outcome_wait_ms(self) -> int:
        """How long an outcome that arrived before its prediction is kept."""
        return self.outcome_wait_ms if self.outcome_wait_ms is not None else self.max_window_ms

    @classmethod
    def parse(
        cls,
        spec: str,
        default_window_ms: int = DEFAULT_WINDOW_MS,
        outcome_wait_ms: int | None = None,
    ) -> JoinWindows:
        """Parse `model=ms,model=ms` (empty for none) into windows over the given default."""
        models: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise WindowConfigError(f"join window {item!r} is not MODEL=MILLISECONDS")
            models[name.strip()] = _positive_ms(raw, item)
        return cls(default_window_ms, models, outcome_wait_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> JoinWindows:
        """The windows configured in `settings` (SAFELOOP_JOIN_WINDOW_MS, SAFELOOP_JOIN_WINDOWS,
        SAFELOOP_OUTCOME_WAIT_MS, parsed and checked by `Settings.from_env`)."""
        return cls(
            settings.join_window_ms, dict(settings.join_windows_ms), settings.outcome_wait_ms
        )


def _positive_ms(raw: str, what: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise WindowConfigError(f"{what}: {raw!r} is not a whole number of milliseconds") from exc
    if value <= 0:
        raise WindowConfigError(f"{what}: window must be positive, got {value}")
    return value
