"""Grafana provisioning: the datasource reads CLICKHOUSE_* and every panel reads our DDL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DDL_DIR = ROOT / "schemas" / "clickhouse"
DEFINED = re.compile(
    r"CREATE\s+(?:TABLE\s+IF\s+NOT\s+EXISTS|OR\s+REPLACE\s+VIEW|MATERIALIZED\s+VIEW\s+IF\s+NOT"
    r"\s+EXISTS)\s+(\w+)",
    re.IGNORECASE,
)
READS = re.compile(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", re.IGNORECASE)


def defined_names() -> set[str]:
    names: set[str] = set()
    for path in DDL_DIR.glob("*.sql"):
        names |= set(DEFINED.findall(path.read_text(encoding="utf-8")))
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "safeloop.json").read_text())
    return data


def every_sql(board: dict[str, Any]) -> list[tuple[str, str]]:
    sql = [(p["title"], t["rawSql"]) for p in board["panels"] for t in p["targets"]]
    sql += [(v["name"], v["query"]) for v in board["templating"]["list"]]
    sql += [(a["name"], a["target"]["rawSql"]) for a in board["annotations"]["list"]]
    return sql


def test_every_panel_reads_only_what_the_ddl_defines() -> None:
    known = defined_names()
    assert {"serving_minutes_agg", "serving_minutes", "window_metrics"} <= known
    for title, sql in every_sql(dashboard()):
        read = set(READS.findall(sql))
        assert read, title
        assert read <= known, f"{title}: reads {sorted(read - known)}"


def test_panels_use_the_provisioned_datasource_and_grafana_time_macros() -> None:
    board = dashboard()
    datasource = (GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text()
    uid = re.search(r"^\s*uid:\s*(\S+)", datasource, re.MULTILINE)
    assert uid is not None
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid.group(1)
        assert panel["datasource"]["type"] == "grafana-clickhouse-datasource"
        for target in panel["targets"]:
            assert "${model}" in target["rawSql"], panel["title"]
            if panel["type"] == "timeseries":
                assert "$__timeFilter(" in target["rawSql"], panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_datasource_reads_clickhouse_settings_from_the_environment() -> None:
    text = (GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text()
    assert "type: grafana-clickhouse-datasource" in text
    variables = set(re.findall(r"\$\{(\w+)\}", text))
    assert variables == {
        "CLICKHOUSE_HOST",
        "CLICKHOUSE_PORT",
        "CLICKHOUSE_USER",
        "CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_DATABASE",
    }
    provider = (GRAFANA / "provisioning" / "dashboards" / "safeloop.yaml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
