"""Where the page's charting library comes from: the installed plotly package, not a CDN."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from safeloop.services.dashboard.exceptions import AssetMissingError


@cache
def plotly_js() -> Path:
    """plotly.min.js from the plotly package's data; found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise AssetMissingError(
        "plotly.min.js not found: install the plotly package (pip install plotly)"
    )
