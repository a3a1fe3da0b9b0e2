"""Per-model join windows and their configuration."""

from __future__ import annotations

import pytest

from safeloop.infra.settings import Settings
from safeloop.streams.exceptions import WindowConfigError
from safeloop.streams.windows import DEFAULT_WINDOW_MS, JoinWindows


def test_default_is_thirty_days() -> None:
    windows = JoinWindows()
    assert windows.window_ms("any") == DEFAULT_WINDOW_MS == 30 * 24 * 3600 * 1000
    # An early outcome waits an hour for its prediction, not a whole window.
    assert windows.early_outcome_wait_ms == 3600 * 1000


def test_per_model_windows_parse_and_override() -> None:
    windows = JoinWindows.parse("clicks=60000, churn=7776000000", default_window_ms=1000)
    assert windows.window_ms("clicks") == 60_000
    assert windows.window_ms("churn") == 7_776_000_000
    assert windows.window_ms("other") == 1000
    assert windows.max_window_ms == 7_776_000_000


def test_from_settings_reads_all_three() -> None:
    settings = Settings.from_env(
        {
            "SAFELOOP_JOIN_WINDOW_MS": "2000",
            "SAFELOOP_JOIN_WINDOWS": "m=500",
            "SAFELOOP_EARLY_OUTCOME_WAIT_MS": "3000",
        }
    )
    windows = JoinWindows.from_settings(settings)
    assert windows.window_ms("x") == 2000
    assert windows.window_ms("m") == 500
    assert windows.early_outcome_wait_ms == 3000


def test_default_settings_give_the_default_windows() -> None:
    assert JoinWindows.from_settings(Settings()) == JoinWindows()


@pytest.mark.parametrize("spec", ["m", "=5", "m=abc", "m=0", "m=-4"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(WindowConfigError):
        JoinWindows.parse(spec)
