"""The small Protocol a user's model implements to be served."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelProtocol(Protocol):
    """Anything with a version that maps named features to one score can be served."""

    @property
    def version(self) -> str: ...

    def predict(self, features: Mapping[str, float]) -> float:
        """Score one row; classification models return the probability of the positive class."""
        ...
