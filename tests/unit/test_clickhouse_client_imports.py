"""Every process that inserts into ClickHouse stays without pandas (clickhouse-connect would
import it at the first insert: 68 MB of RSS, measured in infra/clickhouse/client.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.exceptions import WarehouseError
from safeloop.infra.settings import Settings

try:
    clickhouse_client(Settings(clickhouse_url="http://127.0.0.1:9"), connect_timeout=1)
except WarehouseError:
    pass  # nothing listens there; the client was configured all the same
context = InsertContext("t", ["x"], [get_from_name("UInt8")], data=[[1], [2]])
print(context.row_count, "pandas" in sys.modules)
"""


def test_an_insert_through_a_safeloop_client_does_not_import_pandas() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["2", "False"], done.stderr


def test_without_the_client_an_insert_would_import_pandas() -> None:
    # The check above could pass only because pandas is missing here: it is not.
    probe = PROBE.replace(
        'clickhouse_client(Settings(clickhouse_url="http://127.0.0.1:9"), connect_timeout=1)',
        "raise WarehouseError('skipped')",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["2", "True"], done.stderr
