"""The demo's worse candidate (`safeloop demo --worse-candidate`): the shipped trainer fed the
window through a corrupted label feed (every binary label flipped), as a broken upstream join
would deliver it; the canary's guard is what stops it reaching production."""

from __future__ import annotations

import dataclasses

from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.retraining import linear_trainer
from safeloop.services.retraining.trainer import TrainingWindow

ENTRY_POINT = "safeloop.services.demo.corrupted_trainer:train"


def train(window: TrainingWindow) -> ModelProtocol:
    """`linear_trainer.train` on the window with each 0/1 label turned into its opposite."""
    rows = window.rows.copy()
    rows["ground_truth"] = 1.0 - rows["ground_truth"]
    return linear_trainer.train(dataclasses.replace(window, rows=rows))
