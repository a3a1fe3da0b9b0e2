"""The embedded ClickHouse endpoint: the ClickHouse HTTP interface served from chDB.

`WarehouseServer` runs it in this process (tests); `WarehouseProcess` runs it as a daemon
(`safeloop warehouse start`). Clients reach it with clickhouse-connect, as any ClickHouse server.
"""

from safeloop.infra.warehouse.auth import check_bind_auth, is_loopback
from safeloop.infra.warehouse.process import WarehouseProcess, WarehouseStatus
from safeloop.infra.warehouse.server import ServerConfig, WarehouseServer, warehouse_data_dir

__all__ = [
    "ServerConfig",
    "WarehouseProcess",
    "WarehouseServer",
    "WarehouseStatus",
    "check_bind_auth",
    "is_loopback",
    "warehouse_data_dir",
]
