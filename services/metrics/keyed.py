"""One window per (model_name, model_version, route), fed by mixed batches in one call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import Route
from safeloop.services.metrics.exceptions import InvalidInputError
from safeloop.services.metrics.windows import Columns, Window

W = TypeVar("W", bound=Window)


@dataclass(frozen=True, slots=True)
class WindowKey:
    """What metrics are kept apart by: a model version serving one route."""

    model_name: str
    model_version: str
    route: Route


class KeyedWindows(Generic[W]):
    """Windows created on first use by `factory`, one per key."""

    __slots__ = ("_factory", "_windows")

    def __init__(self, factory: Callable[[], W]) -> None:
        self._factory = factory
        self._windows: dict[WindowKey, W] = {}

    def window(self, key: WindowKey) -> W:
        """The window for `key`, created empty if this is the first time it is asked for."""
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = self._factory()
        return found

    def append(self, keys: Sequence[WindowKey], batch: Mapping[str, npt.ArrayLike]) -> None:
        """Add rows whose keys differ: rows are grouped by key and each group appended once."""
        if not keys:
            return
        first = keys[0]
        if all(key == first for key in keys):
            self.window(first).append(batch)
            return
        codes_by_key: dict[WindowKey, int] = {}
        codes = np.fromiter(
            (codes_by_key.setdefault(key, len(codes_by_key)) for key in keys),
            dtype=np.int64,
            count=len(keys),
        )
        columns = {name: np.asarray(values) for name, values in batch.items()}
        for name, values in columns.items():
            if values.shape[:1] != codes.shape:
                raise InvalidInputError(
                    f"column {name!r} has {values.shape[:1]} rows, keys {codes.shape}"
                )
        # Stable sort keeps each key's rows in arrival order.
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(codes_by_key) + 1))
        for key, code in codes_by_key.items():
            rows = order[bounds[code] : bounds[code + 1]]
            self.window(key).append({name: values[rows] for name, values in columns.items()})

    def __iter__(self) -> Iterator[tuple[WindowKey, W]]:
        return iter(list(self._windows.items()))

    def __len__(self) -> int:
        return len(self._windows)

    def keep_rows(self, key: WindowKey, keep: Callable[[Columns], npt.NDArray[np.bool_]]) -> int:
        """Keep only the rows of `key`'s window that `keep` selects (a mask over its view);
        returns how many were dropped."""
        found = self._windows.get(key)
        if found is None:
            return 0
        view = found.view()
        mask = np.asarray(keep(view), dtype=np.bool_)
        dropped = int(mask.size - np.count_nonzero(mask))
        if dropped:
            fresh = self._factory()
            fresh.append({name: values[mask] for name, values in view.items()})
            self._windows[key] = fresh
        return dropped

    def discard(self, key: WindowKey) -> None:
        """Forget a key, e.g. once its model version has been retired."""
        self._windows.pop(key, None)
