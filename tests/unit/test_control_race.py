"""Concurrent publishers: which command replicas apply, and the rebase-and-republish loop."""

from __future__ import annotations

import dataclasses

import pytest

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.exceptions import ControlTopicError
from safeloop.services.control.publisher import ControlTopicView
from safeloop.services.control.race import publish_settled, rival_of


def command(
    sequence: int, command_id: str, model: str = "churn", canary_bp: int = 0
) -> ControlCommand:
    return ControlCommand(
        command_id=command_id,
        model_name=model,
        kind=CommandKind.SET_CANARY,
        sequence=sequence,
        issued_at=1000 + sequence,
        issuer=f"issuer-of-{command_id}",
        reason="test",
        config=ModelConfig("v1", "v2", canary_basis_points=canary_bp),
        key_id="",
        signature="",
    )


def test_command_first_with_its_sequence_is_in_force() -> None:
    ours = command(3, "ours")
    history = [command(1, "a"), command(2, "b"), ours, command(3, "late-rival")]
    assert rival_of(history, ours) is None


def test_earlier_record_with_same_or_higher_sequence_wins() -> None:
    ours = command(3, "ours")
    rival = command(3, "rival")
    assert rival_of([command(2, "b"), rival, ours], ours) is rival
    higher = command(5, "higher")
    assert rival_of([higher, command(4, "x"), ours], ours) is higher


def test_other_models_do_not_compete() -> None:
    ours = command(3, "ours")
    assert rival_of([command(9, "other", model="fraud"), ours], ours) is None


def test_acknowledged_command_missing_from_topic_is_an_error() -> None:
    with pytest.raises(ControlTopicError, match="not on the control topic"):
        rival_of([command(1, "a")], command(2, "ours"))


class Topic:
    """A control partition in memory; `rivals` are appended just before our next sends."""

    def __init__(self, rivals: list[ControlCommand]) -> None:
        self.records: list[ControlCommand] = []
        self.rivals = rivals
        self.views_read = 0

    def read_view(self) -> ControlTopicView:
        self.views_read += 1
        latest: dict[str, ControlCommand] = {}
        for record in self.records:
            if (
                record.model_name not in latest
                or record.sequence > latest[record.model_name].sequence
            ):
                latest[record.model_name] = record
        return ControlTopicView(latest, 0)

    def send(self, ours: ControlCommand) -> None:
        if self.rivals:
            self.records.append(self.rivals.pop(0))
        self.records.append(ours)

    def history_of(self, ours: ControlCommand) -> list[ControlCommand]:
        return list(self.records)


def build_plus_ten(view: ControlTopicView) -> ControlCommand:
    current = view.latest.get("churn")
    sequence = current.sequence + 1 if current else 1
    base = current.config.canary_basis_points if current else 0
    return command(sequence, f"ours-{sequence}", canary_bp=base + 1000)


def test_lost_command_is_rebuilt_on_the_winner_and_republished() -> None:
    topic = Topic([command(1, "rival", canary_bp=500)])
    settled = publish_settled(
        topic.read_view, build_plus_ten, topic.send, topic.history_of, retries=3
    )
    assert settled.in_force and settled.attempts == 2
    assert [c.command_id for c in settled.lost_to] == ["rival"]
    # Rebased: the change applied to the winner's config, on the next sequence.
    assert settled.command.sequence == 2
    assert settled.command.config.canary_basis_points == 500 + 1000


def test_gives_up_after_retries_and_says_it_is_not_in_force() -> None:
    rivals = [command(1, "r1"), command(3, "r2"), command(5, "r3")]
    topic = Topic(rivals)
    lost: list[tuple[str, str]] = []
    settled = publish_settled(
        topic.read_view,
        build_plus_ten,
        topic.send,
        topic.history_of,
        retries=1,
        on_lost=lambda ours, rival: lost.append((ours.command_id, rival.command_id)),
    )
    assert not settled.in_force and settled.attempts == 2
    assert lost == [("ours-1", "r1"), ("ours-2", "r2")]


def test_no_retries_reports_the_first_loss() -> None:
    topic = Topic([command(1, "r1")])
    settled = publish_settled(
        topic.read_view, build_plus_ten, topic.send, topic.history_of, retries=0
    )
    assert not settled.in_force and settled.attempts == 1 and topic.views_read == 1
    assert dataclasses.replace(settled.lost_to[0]) == topic.records[0]
