"""Small shared helpers for turning inputs into validated 1-D numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.services.metrics.exceptions import InvalidInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def as_float(values: npt.ArrayLike, name: str) -> FloatArray:
    """`values` as a 1-D float64 array (no copy when it already is one)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def as_binary(values: npt.ArrayLike, name: str) -> BoolArray:
    """0/1 labels as a boolean array; anything else is refused rather than guessed."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    bad = (array != 0) & (array != 1)
    if bool(np.any(bad)):
        raise InvalidInputError(f"{name} must hold only 0 and 1, found {array[bad][:3]!r}")
    return array.astype(np.bool_)


def same_length(name_a: str, a: npt.NDArray[Any], name_b: str, b: npt.NDArray[Any]) -> None:
    """Refuse arrays that should be aligned row by row but are not."""
    if a.shape[0] != b.shape[0]:
        raise InvalidInputError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}")


def optional_float(value: float | np.floating[Any]) -> float | None:
    """A float, with NaN mapped to None so that snapshots say "undefined" one way only."""
    result = float(value)
    return None if np.isnan(result) else result
