"""Where a provisional promotion's labels come from: counts of right answers per side."""

from __future__ import annotations

from typing import Protocol


class LabelCounts(Protocol):
    """(correct, labelled) for the known-good and the candidate version since `since_ms`.

    Known-good: its production answers; candidate: its canary and production answers; both
    counted by prediction time, from the joined and the late labels.
    """

    def accuracy_counts(
        self, model_name: str, known_good: str, candidate: str, since_ms: int
    ) -> tuple[tuple[int, int], tuple[int, int]]: ...
