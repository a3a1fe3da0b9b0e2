"""The single-node DDL (schemas/clickhouse/*.sql) rendered for a replicated, sharded cluster.

Every table `t` becomes `t_local` (a Replicated*MergeTree on each replica of each shard) and
`t` itself a Distributed table over them: writers insert into `t` and readers query `t` as
before, so no code changes. Rows are sharded by prediction_id where the sorting key has it
(predictions, outcomes and feedback of one prediction meet on one shard, so their joins stay
local) and by the whole sorting key otherwise; either way every copy of a row lands on the same
shard, where ReplacingMergeTree collapses it. Materialised views aggregate on each shard (from
the local tables into the local target); plain views read the Distributed tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

LOCAL_SUFFIX = "_local"
# Keeper path of each local table's replicas; {shard} and {replica} are server macros.
REPLICA_PATH = "/clickhouse/tables/{{shard}}/{database}/{table}"

_CREATE_TABLE = re.compile(r"^(\s*CREATE TABLE IF NOT EXISTS)\s+(\w+)", re.IGNORECASE)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(\s*\(([^()]*)\))?", re.IGNORECASE)
_ORDER_BY = re.compile(r"^\s*ORDER BY\s+(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_CREATE_VIEW = re.compile(r"^(\s*CREATE OR REPLACE VIEW)\s+(\w+)", re.IGNORECASE)
_CREATE_MV = re.compile(
    r"^(\s*CREATE MATERIALIZED VIEW IF NOT EXISTS)\s+(\w+)\s+TO\s+(\w+)", re.IGNORECASE
)
_ALTER = re.compile(r"^(\s*ALTER TABLE)\s+(\w+)(\s+.*)$", re.IGNORECASE | re.DOTALL)
_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)
# A view whose query holds a subquery or join over a Distributed table: every shard answers it
# from its own local tables (the sharding by prediction_id co-locates what they join).
_SUBQUERY = re.compile(r"\bJOIN\b|\bIN\s*\(\s*SELECT\b", re.IGNORECASE)
_NON_REPLICATED_DEDUP = "non_replicated_deduplication_window"


@dataclass(frozen=True)
class ClusterTarget:
    """Which cluster (a name in the servers' remote_servers) and database to render for."""

    cluster: str
    database: str


def table_names(statements: Sequence[str]) -> set[str]:
    """Tables created by `statements` (they get a local and a Distributed form)."""
    return {m.group(2) for s in statements if (m := _CREATE_TABLE.match(_code(s)))}


def sharding_key(order_by: str) -> str:
    """The Distributed sharding expression for a table with this ORDER BY."""
    columns = [column.strip() for column in order_by.strip("() ").split(",")]
    if "prediction_id" in columns:
        return "cityHash64(prediction_id)"
    return f"cityHash64({', '.join(columns)})"


def render_statement(statement: str, tables: set[str], target: ClusterTarget) -> list[str]:
    """The cluster form of one single-node statement (one or two statements)."""
    code = _code(statement)
    on_cluster = f"ON CLUSTER {_quoted(target.cluster)}"
    if match := _CREATE_TABLE.match(code):
        return _render_table(code, match, on_cluster, target)
    if match := _CREATE_MV.match(code):
        head = f"{match.group(1)} {match.group(2)} {on_cluster} TO {match.group(3)}{LOCAL_SUFFIX}"
        body = _FROM.sub(lambda m: f"FROM {_local(m.group(1), tables)}", code[match.end() :])
        return [head + body]
    if match := _CREATE_VIEW.match(code):
        rendered = f"{match.group(1)} {match.group(2)} {on_cluster}{code[match.end() :]}"
        if _SUBQUERY.search(code):
            rendered += "\nSETTINGS distributed_product_mode = 'local'"
        return [rendered]
    if (match := _ALTER.match(code)) and match.group(2) in tables:
        name, rest = match.group(2), match.group(3)
        # The local table holds the data; the Distributed one must expose the same columns.
        return [
            f"{match.group(1)} {name}{LOCAL_SUFFIX} {on_cluster}{rest}",
            f"{match.group(1)} {name} {on_cluster}{rest}",
        ]
    raise ValueError(f"no cluster form for this statement:\n{code[:200]}")


def render(statements: Sequence[str], target: ClusterTarget) -> list[str]:
    """Every statement of a migration set, in order, rendered for `target`."""
    tables = table_names(statements)
    return [out for statement in statements for out in render_statement(statement, tables, target)]


def create_database(target: ClusterTarget) -> str:
    return (
        f"CREATE DATABASE IF NOT EXISTS {_quoted(target.database)} "
        f"ON CLUSTER {_quoted(target.cluster)}"
    )


def _render_table(
    code: str, match: re.Match[str], on_cluster: str, target: ClusterTarget
) -> list[str]:
    name = match.group(2)
    local = f"{name}{LOCAL_SUFFIX}"
    engine = _ENGINE.search(code)
    order_by = _ORDER_BY.search(code)
    if engine is None or order_by is None:
        raise ValueError(f"table {name}: expected a *MergeTree engine and ORDER BY")
    path = REPLICA_PATH.format(database=target.database, table=local)
    arguments = ", ".join(a for a in (f"'{path}'", "'{replica}'", engine.group(3) or "") if a)
    replicated = f"ENGINE = Replicated{engine.group(1)}({arguments})"
    body = code[match.end() : engine.start()] + replicated + code[engine.end() :]
    # Replicated tables deduplicate retried inserts through Keeper, over their own window.
    body = body.replace(_NON_REPLICATED_DEDUP, "replicated_deduplication_window")
    local_table = f"{match.group(1)} {local} {on_cluster}{body}"
    distributed = (
        f"{match.group(1)} {name} {on_cluster} AS {local}\n"
        f"ENGINE = Distributed({_quoted(target.cluster)}, {_quoted(target.database)}, "
        f"{local}, {sharding_key(order_by.group(1))})"
    )
    return [local_table, distributed]


def _local(name: str, tables: set[str]) -> str:
    return f"{name}{LOCAL_SUFFIX}" if name in tables else name


def _code(statement: str) -> str:
    """The statement without its comment lines (comments may name tables and engines too)."""
    lines = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip()


def _quoted(identifier: str) -> str:
    return f"`{identifier}`"
