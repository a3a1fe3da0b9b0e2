"""The built-in web dashboard: read-only SQL over the ClickHouse views, a Starlette app, a page."""
