"""Which segments a request belongs to: its values for the model's declared segment keys."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def request_segments(
    segment_keys: Sequence[str], attributes: Mapping[str, str], features: Mapping[str, Any]
) -> dict[str, str]:
    """key -> value for each segment key the request carries: an attribute, else a feature.

    A key the request lacks is left out (the request counts only in the overall figures).
    """
    segments: dict[str, str] = {}
    for key in segment_keys:
        value = attributes.get(key)
        if value is not None:
            segments[key] = value
            continue
        feature = features.get(key)
        # A numeric feature (a bucket, a flag) segments by its value as text: 3 -> "3".
        if (
            isinstance(feature, int | float)
            and not isinstance(feature, bool)
            and math.isfinite(feature)
        ):
            segments[key] = f"{feature:g}"
    return segments
