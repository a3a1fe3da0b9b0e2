"""Feature flags: decoding, typed getters, the flag book and the context model code reads."""

from __future__ import annotations

import pytest

from safeloop.schemas.events import ModelConfig
from safeloop.services.serving.flags import (
    FlagBook,
    ModelFlags,
    current_flags,
    decode_flag,
    encode_flag,
    set_current_flags,
)


def test_values_round_trip_through_json() -> None:
    for value in (True, False, 3, 2.5, "blue"):
        assert decode_flag(encode_flag(value)) == value


def test_non_json_and_non_scalar_values_stay_strings() -> None:
    assert decode_flag("blue") == "blue"
    assert decode_flag("[1, 2]") == "[1, 2]"


def test_typed_getters_fall_back_on_wrong_types() -> None:
    flags = ModelFlags({"on": True, "limit": 5, "colour": "red"})
    assert flags.get_bool("on") is True
    assert flags.get_bool("limit", default=False) is False
    assert flags.get_number("limit") == 5.0
    assert flags.get_number("on", default=-1.0) == -1.0
    assert flags.get_text("colour") == "red"
    assert flags.get_text("missing", "none") == "none"


def test_book_updates_per_model() -> None:
    book = FlagBook()
    assert len(book.flags("churn")) == 0
    book.update("churn", ModelConfig("v1", flags={"threshold": "0.7", "beta": "true"}))
    book.update("price", ModelConfig("v1", flags={"beta": "false"}))
    assert book.flags("churn").get_number("threshold") == 0.7
    assert book.flags("churn").get_bool("beta") is True
    assert book.flags("price").get_bool("beta", default=True) is False


def test_model_code_reads_current_flags() -> None:
    set_current_flags(ModelFlags({"mode": "fast"}))
    assert current_flags().get_text("mode") == "fast"


def test_reads_decode_nothing_flags_are_parsed_once_per_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Per-read cost is a dict lookup: the JSON is decoded when the command arrives, not when
    # model code asks (the speed itself is measured by bench.serving_overhead).
    book = FlagBook()
    book.update("churn", ModelConfig("v1", flags={f"f{i}": "true" for i in range(50)}))
    first = book.flags("churn")

    def no_decoding(raw: str) -> None:
        raise AssertionError(f"decoded {raw!r} on a read")

    monkeypatch.setattr("safeloop.services.serving.flags.json.loads", no_decoding)
    assert book.flags("churn") is first
    assert all(book.flags("churn").get_bool(f"f{i}") for i in range(50))
    monkeypatch.undo()
    book.update("churn", ModelConfig("v1", flags={"f10": "false"}))
    assert book.flags("churn") is not first and not book.flags("churn").get_bool("f10")
