"""The hand-written OutcomeEvent encoder writes exactly the codec's bytes, for any value."""

from __future__ import annotations

import random

from safeloop.schemas.codec import OUTCOME_CODEC
from safeloop.schemas.events import OutcomeEvent
from safeloop.schemas.outcome_batch import HAND_ENCODED, encode_outcomes


def test_the_current_schema_is_the_layout_the_encoder_writes() -> None:
    assert HAND_ENCODED


def test_hand_encoded_bytes_equal_the_codec_for_edge_and_random_values() -> None:
    rng = random.Random(7)
    stamps = [0, 1, -1, 63, 64, 8191, 8192, -8192, 1_764_460_000_000, 2**62, 2**63 - 1, -(2**63)]
    stamps += [rng.randint(-(2**63), 2**63 - 1) for _ in range(200)]
    ids = ["", "p", "é" * 40, "x" * 63, "x" * 64, "y" * 300, "🙂-1"]
    rows = [
        (rng.choice(ids) + str(i), rng.uniform(-1e12, 1e12), rng.choice(stamps), rng.choice(ids))
        for i in range(3000)
    ]
    rows += [("nan", float("nan"), 1, "s"), ("inf", float("inf"), 2, "s"), ("z", -0.0, 3, "s")]
    expected = [OUTCOME_CODEC.encode(OutcomeEvent(*row)) for row in rows]
    assert encode_outcomes(rows) == expected


def test_hand_encoded_outcomes_decode_back_to_the_same_events() -> None:
    rows = [(f"pred-{i}", float(i % 2), 1_764_460_000_000 + i, "crm") for i in range(100)]
    decoded = [OUTCOME_CODEC.decode(data) for data in encode_outcomes(rows)]
    assert decoded == [OutcomeEvent(*row) for row in rows]
