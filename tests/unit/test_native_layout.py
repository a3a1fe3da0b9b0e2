"""Native blocks rewritten for a client revision: block info, time zones, custom serialization."""

from __future__ import annotations

import pytest

from safeloop.infra.warehouse.exceptions import NativeLayoutError
from safeloop.infra.warehouse.native import NativeRewriter, parse_type

# chDB's Native for `SELECT toDateTime(0, 'America/Denver') AS t, 'ab' AS s`, two rows.
BLOCK = (
    b"\x02\x02"
    + b"\x01t\x08DateTime" + b"\x00\x00\x00\x00" * 2
    + b"\x01s\x06String" + b"\x02ab\x02ab"
)  # fmt: skip
TRUE_TYPES = ["DateTime('America/Denver')", "String"]


def test_revision_zero_keeps_the_block_and_54405_adds_block_info_and_the_zone() -> None:
    assert NativeRewriter(0, TRUE_TYPES).rewrite(BLOCK) == BLOCK
    out = NativeRewriter(54405, TRUE_TYPES).rewrite(BLOCK + BLOCK)
    one = (
        b"\x01\x00\x02\xff\xff\xff\xff\x00\x02\x02"
        + b"\x01t\x1aDateTime('America/Denver')" + b"\x00\x00\x00\x00" * 2
        + b"\x01s\x06String" + b"\x02ab\x02ab"
    )  # fmt: skip
    assert out == one + one


def test_before_the_time_zone_revision_the_zone_stays_off() -> None:
    out = NativeRewriter(54000, TRUE_TYPES).rewrite(BLOCK)
    assert out == b"\x01\x00\x02\xff\xff\xff\xff\x00" + BLOCK


def test_custom_serialization_revision_marks_each_column_plain() -> None:
    out = NativeRewriter(54460, ["DateTime", "String"]).rewrite(BLOCK)
    assert out == (
        b"\x01\x00\x02\xff\xff\xff\xff\x00\x02\x02"
        + b"\x01t\x08DateTime\x00" + b"\x00\x00\x00\x00" * 2
        + b"\x01s\x06String\x00" + b"\x02ab\x02ab"
    )  # fmt: skip


def test_type_names_parse_into_trees() -> None:
    parsed = parse_type("Map(String, Array(Nullable(Decimal(10, 2))))")
    assert parsed.name == "Map" and parsed.args[1].args[0].args[0].name == "Decimal"
    assert [a.name for a in parse_type("Tuple(a UInt8, b String)").args] == ["UInt8", "String"]
    assert parse_type("Enum8('a' = 1, 'b,c' = 2)").name == "Enum8"


def test_unknown_layouts_and_truncated_blocks_are_refused() -> None:
    with pytest.raises(NativeLayoutError):
        NativeRewriter(54405, []).rewrite(b"\x01\x01\x01x\x07Dynamic\x00")
    with pytest.raises(NativeLayoutError):
        NativeRewriter(54405, TRUE_TYPES).rewrite(BLOCK[:-3])


def test_geo_interval_and_simple_aggregate_columns_are_walked() -> None:
    point = b"\x00" * 16
    block = (
        b"\x03\x01"
        + b"\x01p\x05Point" + point
        + b"\x01i\x0eIntervalSecond" + b"\x00" * 8
        + b"\x01a\x2dSimpleAggregateFunction(sum, Nullable(UInt8))" + b"\x00\x07"
    )  # fmt: skip
    out = NativeRewriter(54405, []).rewrite(block)
    assert out == b"\x01\x00\x02\xff\xff\xff\xff\x00" + block
