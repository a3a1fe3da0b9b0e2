"""Per-model join windows: how long a prediction waits for its outcome (default 30 days)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from safeloop.infra.settings import Settings
from safeloop.streams.exceptions import WindowConfigError

HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS
DEFAULT_WINDOW_MS = 30 * DAY_MS
DEFAULT_EARLY_OUTCOME_WAIT_MS = HOUR_MS


@dataclass(frozen=True, slots=True)
class JoinWindows:
    """The join window per model name, and how long an early outcome waits for its prediction
    (also how long a closed prediction_id is remembered, so a late outcome is known as late)."""

    default_window_ms: int = DEFAULT_WINDOW_MS
    model_window_ms: Mapping[str, int] = field(default_factory=dict)
    early_outcome_wait_ms: int = DEFAULT_EARLY_OUTCOME_WAIT_MS
    # Read once per outcome: computed once.
    _max_window_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = [self.default_window_ms, *self.model_window_ms.values()]
        values.append(self.early_outcome_wait_ms)
        if any(value <= 0 for value in values):
            raise WindowConfigError(f"join windows must be positive, got {values}")
        windows = [self.default_window_ms, *self.model_window_ms.values()]
        object.__setattr__(self, "_max_window_ms", max(windows))

    def window_ms(self, model_name: str) -> int:
        """The window of `model_name`, or the default one."""
        return self.model_window_ms.get(model_name, self.default_window_ms)

    @property
    def max_window_ms(self) -> int:
        return self._max_window_ms

    @classmethod
    def parse(
        cls,
        spec: str,
        default_window_ms: int = DEFAULT_WINDOW_MS,
        early_outcome_wait_ms: int = DEFAULT_EARLY_OUTCOME_WAIT_MS,
    ) -> JoinWindows:
        """Parse `model=ms,model=ms` (empty for none) into windows over the given default."""
        models: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise WindowConfigError(f"join window {item!r} is not MODEL=MILLISECONDS")
            models[name.strip()] = _positive_ms(raw, item)
        return cls(default_window_ms, models, early_outcome_wait_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> JoinWindows:
        """The windows configured in `settings` (SAFELOOP_JOIN_WINDOW_MS, SAFELOOP_JOIN_WINDOWS,
        SAFELOOP_EARLY_OUTCOME_WAIT_MS, parsed and checked by `Settings.from_env`)."""
        return cls(
            settings.join_window_ms,
            dict(settings.join_windows_ms),
            settings.early_outcome_wait_ms,
        )


def _positive_ms(raw: str, what: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise WindowConfigError(f"{what}: {raw!r} is not a whole number of milliseconds") from exc
    if value <= 0:
        raise WindowConfigError(f"{what}: window must be positive, got {value}")
    return value
