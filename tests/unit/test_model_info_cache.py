"""ModelInfoCache: a version without metadata is retried, and said once, not every retry."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from safeloop.services.models.exceptions import ModelNotFoundError
from safeloop.services.monitor import model_info
from safeloop.services.monitor.model_info import ModelInfoCache


class _Store:
    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.loads = 0

    def load_metadata(self, model_name: str, version: str) -> Any:
        self.loads += 1
        if self.loads <= self.misses:
            raise ModelNotFoundError(model_name, version)
        return SimpleNamespace(
            primary_metric="accuracy",
            task=SimpleNamespace(value="classification"),
            baseline=None,
            primary_metric_value=0.9,
            created_at_ms=1,
        )


def test_a_missing_version_is_retried_and_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(model_info, "MISS_RETRY_S", 0.0)
    store = _Store(misses=5)
    cache = ModelInfoCache(store)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger=model_info.__name__):
        for _ in range(5):
            assert cache.get("churn", "v1") is None
        info = cache.get("churn", "v1")
    assert store.loads == 6
    assert info is not None and info.baseline_performance == 0.9
    levels = [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert levels.count((logging.WARNING, "no metadata for churn v1")) == 1
    assert levels.count((logging.DEBUG, "no metadata for churn v1")) == 4
    assert (logging.INFO, "metadata for churn v1 found after all") in levels


def test_a_missing_version_is_not_read_again_within_the_retry_interval() -> None:
    store = _Store(misses=10)
    cache = ModelInfoCache(store)  # type: ignore[arg-type]
    for _ in range(3):
        assert cache.get("churn", "v1") is None
    assert store.loads == 1
