"""`safeloop migrate --cluster`: the cluster DDL keeps the single-node tables, and the engine's
own parser (chDB's formatQuery) accepts every statement of it."""

from __future__ import annotations

import base64
import json
import re

import pytest

from safeloop.infra.clickhouse.cluster_ddl import LOCAL_SUFFIX, ClusterTarget, table_names
from safeloop.infra.clickhouse.migrate import cluster_ddl, load_migrations

chdb = pytest.importorskip("chdb")

TARGET = ClusterTarget("prod", "safeloop")
SINGLE = [s for m in load_migrations() for s in m.statements]
CLUSTER = cluster_ddl(TARGET.database, TARGET.cluster)
TABLES = sorted(table_names(SINGLE))


def _encoded(statement: str) -> str:
    # base64: the statements hold quotes and {macros} chDB would take for query parameters.
    return f"'{base64.b64encode(statement.encode()).decode()}'"


def formatted(statement: str) -> str:
    """The statement as ClickHouse's parser reads it (a syntax error raises)."""
    return str(chdb.query(f"SELECT formatQuery(base64Decode({_encoded(statement)}))", "TSVRaw"))


def _parse_all(statements: list[str]) -> dict[str, str | None]:
    """Each statement as the parser reads it, None where it does not parse (one engine call)."""
    array = ", ".join(_encoded(statement) for statement in statements)
    result = chdb.query(
        f"SELECT formatQueryOrNull(base64Decode(s)) FROM (SELECT arrayJoin([{array}]) AS s)",
        "JSONCompact",
    )
    rows = json.loads(str(result))["data"]
    return {statement: row[0] for statement, row in zip(statements, rows, strict=True)}


PARSED = _parse_all(SINGLE + CLUSTER)


def _create(statements: list[str], name: str) -> str:
    pattern = re.compile(rf"^CREATE TABLE IF NOT EXISTS {name}\b", re.IGNORECASE)
    text = PARSED[next(s for s in statements if pattern.match(_without_comments(s)))]
    assert text is not None
    return text


def _without_comments(statement: str) -> str:
    lines = statement.splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("--")).lstrip()


def _columns(create: str) -> str:
    return create[create.index("(") : create.index("\nENGINE")]


def _order_by(create: str) -> str:
    return next(line for line in create.splitlines() if line.startswith("ORDER BY"))


@pytest.mark.parametrize("statement", CLUSTER, ids=lambda s: s.split("\n")[0][:70])
def test_the_engine_parses_every_cluster_statement(statement: str) -> None:
    assert PARSED[statement]


def test_the_parser_check_rejects_broken_ddl() -> None:
    assert formatted(CLUSTER[-1]).startswith("CREATE")
    assert _parse_all([CLUSTER[-1] + " ORDER"]) == {CLUSTER[-1] + " ORDER": None}
    with pytest.raises(RuntimeError, match="Syntax error"):
        formatted(CLUSTER[-1] + " ORDER")


@pytest.mark.parametrize("table", TABLES)
def test_each_table_keeps_its_columns_and_ordering_key_on_every_replica(table: str) -> None:
    single = _create(SINGLE, table)
    local = _create(CLUSTER, f"{table}{LOCAL_SUFFIX}")
    assert "ON CLUSTER prod" in local
    assert _columns(local) == _columns(single)
    assert _order_by(local) == _order_by(single)
    engine = re.search(r"ENGINE = (\w+)\((.*)\)", local)
    assert engine is not None and engine.group(1).startswith("Replicated")
    assert engine.group(1).removeprefix("Replicated") in single
    assert f"'/clickhouse/tables/{{shard}}/safeloop/{table}_local', '{{replica}}'" in engine.group(
        2
    )
    assert "non_replicated_deduplication_window" not in local


@pytest.mark.parametrize("table", TABLES)
def test_writers_and_the_dashboard_use_a_distributed_table_of_the_same_name(table: str) -> None:
    distributed = _create(CLUSTER, table)
    assert f"AS {table}_local" in distributed
    assert f"ENGINE = Distributed(prod, safeloop, {table}_local, cityHash64(" in distributed


@pytest.mark.parametrize("table", ["predictions", "outcomes", "feedback"])
def test_what_the_join_pairs_lives_on_one_shard(table: str) -> None:
    assert "cityHash64(prediction_id))" in _create(CLUSTER, table)


def test_materialised_views_aggregate_on_each_shard() -> None:
    views = [s for s in CLUSTER if s.startswith("CREATE MATERIALIZED VIEW")]
    assert views
    for view in views:
        assert re.search(r"TO \w+_local AS", view), view
        source = re.search(r"\bFROM (\w+)", view)
        assert source is not None and source.group(1).endswith(LOCAL_SUFFIX), view


def test_new_columns_reach_the_local_and_the_distributed_table() -> None:
    alters = [s for s in CLUSTER if s.startswith("ALTER TABLE")]
    single_alters = [s for s in SINGLE if _without_comments(s).startswith("ALTER TABLE")]
    assert len(alters) == 2 * len(single_alters)
    assert any(s.startswith("ALTER TABLE predictions_local ON CLUSTER") for s in alters)
    assert any(s.startswith("ALTER TABLE predictions ON CLUSTER") for s in alters)


def test_views_with_joins_answer_from_co_located_local_tables() -> None:
    late = next(s for s in CLUSTER if "VIEW feedback_late" in s)
    assert late.endswith("SETTINGS distributed_product_mode = 'local'")
