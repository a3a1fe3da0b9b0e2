"""Reaching ClickHouse: the clickhouse-connect client factory and schema migrations."""

from safeloop.infra.clickhouse.client import clickhouse_client

__all__ = ["clickhouse_client"]
