"""`safeloop metrics run`'s /healthz and /readyz verdicts, and the endpoint serving them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from safeloop.infra.prometheus import Counter, Registry
from safeloop.services.monitor.consumer import GroupMembership
from safeloop.services.monitor.endpoint import MetricsEndpoint
from safeloop.services.monitor.liveness import Liveness, check_liveness, check_readiness
from safeloop.services.monitor.service import LoopState

NOW = 1_000.0
STALE = 30.0


def _alive_loop(**changes: object) -> LoopState:
    loop = LoopState(
        running=True,
        iterated_at=NOW - 0.1,
        snapshot_written_at=NOW - 5,
        control_ready_at=NOW - 50,
        control_warm_up_s=0.02,
    )
    for name, value in changes.items():
        setattr(loop, name, value)
    return loop


def _member(**changes: object) -> GroupMembership:
    membership = GroupMembership(
        assigned_at=NOW - 60,
        partitions=frozenset({0, 1}),
        polled_at=NOW,
        caught_up_at=NOW - 55,
        catch_up_remaining=0,
    )
    for name, value in changes.items():
        setattr(membership, name, value)
    return membership


def _check(loop: LoopState, **consumers: GroupMembership) -> Liveness:
    return check_liveness(loop, consumers or {"predictions": _member()}, NOW, STALE)


def test_alive_loop_with_assigned_polling_consumers_is_ok() -> None:
    liveness = _check(_alive_loop(), predictions=_member(), feedback=_member())
    assert liveness.ok
    body = liveness.body()
    assert body["status"] == "ok"
    assert body["reasons"] == []
    assert body["last_snapshot_age_s"] == 5.0
    assert body["consumers"]["predictions"] == {
        "partitions": [0, 1],
        "joined": True,
        "last_poll_age_s": 0.0,
        "caught_up": True,
        "catch_up_remaining": 0,
    }
    assert (body["control_producer_ready"], body["control_warm_up_s"]) == (True, 0.02)
    json.dumps(body)


@pytest.mark.parametrize(
    ("loop", "reason"),
    [
        (LoopState(), "metrics loop is not running"),
        (LoopState(running=True), "metrics loop has not completed an iteration yet"),
        (LoopState(running=True, iterated_at=NOW - 31), "last completed an iteration 31.0s ago"),
        (LoopState(running=False, iterated_at=NOW), "metrics loop is not running"),
    ],
)
def test_a_dead_or_stalled_loop_is_unavailable(loop: LoopState, reason: str) -> None:
    liveness = _check(loop)
    assert not liveness.ok
    assert liveness.body()["status"] == "unavailable"
    assert any(reason in text for text in liveness.reasons), liveness.reasons


@pytest.mark.parametrize(
    ("membership", "reason"),
    [
        (_member(assigned_at=None, partitions=frozenset()), "waiting for a partition assignment"),
        (_member(polled_at=None), "has not polled yet"),
        (_member(polled_at=NOW - 45), "last polled 45.0s ago"),
        (
            _member(unassigned_at=NOW - 40, partitions=frozenset()),
            "without an assignment for 40.0s",
        ),
    ],
)
def test_an_unassigned_or_silent_consumer_is_unavailable(
    membership: GroupMembership, reason: str
) -> None:
    liveness = _check(_alive_loop(), feedback=membership, predictions=_member())
    assert not liveness.ok
    assert liveness.reasons == (f"feedback: {reason}",)


def test_a_short_rebalance_and_an_idle_group_member_are_still_ok() -> None:
    rebalancing = _member(unassigned_at=NOW - 2, partitions=frozenset())
    # More group members than partitions: joined, nothing to read, still polling.
    idle = _member(partitions=frozenset())
    assert _check(_alive_loop(), predictions=rebalancing, feedback=idle).ok


def test_staleness_edge_is_inclusive() -> None:
    assert _check(LoopState(running=True, iterated_at=NOW - STALE)).ok
    assert not _check(LoopState(running=True, iterated_at=NOW - STALE - 0.01)).ok


def test_ready_when_alive_with_a_delivering_producer_and_primed_windows() -> None:
    ready = check_readiness(_alive_loop(), {"predictions": _member(), "feedback": _member()}, NOW)
    assert ready.ok and ready.body()["status"] == "ok"


def test_alive_but_not_ready_until_the_control_producer_delivers() -> None:
    loop = _alive_loop(control_ready_at=None, control_warm_up_s=None)
    consumers = {"predictions": _member()}
    assert check_liveness(loop, consumers, NOW).ok
    ready = check_readiness(loop, consumers, NOW)
    assert ready.reasons == (
        "control producer has not delivered yet (a rollback would wait for it)",
    )


def test_alive_but_not_ready_until_every_consumer_caught_up() -> None:
    behind = _member(caught_up_at=None, catch_up_remaining=1234)
    unmeasured = _member(caught_up_at=None, catch_up_remaining=None)
    consumers = {"feedback": unmeasured, "predictions": behind}
    assert check_liveness(_alive_loop(), consumers, NOW).ok
    ready = check_readiness(_alive_loop(), consumers, NOW)
    assert ready.reasons == (
        "feedback: not caught up with its partitions' end offsets",
        "predictions: not caught up with its partitions' end offsets: 1234 records to go",
    )


def test_not_alive_is_not_ready() -> None:
    ready = check_readiness(LoopState(), {"predictions": _member()}, NOW)
    assert "metrics loop is not running" in ready.reasons
    assert "control producer has not delivered yet" in " ".join(ready.reasons)


# -- the endpoint -----------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[MetricsEndpoint, Counter, list[Liveness]]]:
    registry = Registry()
    counter = registry.register(Counter("things_total", "Things.", ("kind",)))
    verdict = [Liveness(()), Liveness(("not yet",))]
    endpoint = MetricsEndpoint(
        "127.0.0.1", 0, registry, lambda: verdict[0], lambda: verdict[1]
    ).start()
    try:
        yield endpoint, counter, verdict
    finally:
        endpoint.close()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_endpoint_serves_metrics_and_health(
    served: tuple[MetricsEndpoint, Counter, list[Liveness]],
) -> None:
    endpoint, counter, verdict = served
    counter.inc(("a",), 3)
    status, content_type, text = _get(f"{endpoint.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'things_total{kind="a"} 3' in text

    status, content_type, text = _get(f"{endpoint.url}/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(text)["status"] == "ok"

    verdict[0] = Liveness(("metrics loop is not running",), {"loop_running": False})
    status, _, text = _get(f"{endpoint.url}/healthz")
    assert status == 503
    assert json.loads(text) == {
        "status": "unavailable",
        "reasons": ["metrics loop is not running"],
        "loop_running": False,
    }
    assert _get(f"{endpoint.url}/nothing")[0] == 404

    status, _, text = _get(f"{endpoint.url}/readyz")
    assert status == 503 and json.loads(text)["reasons"] == ["not yet"]
    verdict[1] = Liveness(())
    assert _get(f"{endpoint.url}/readyz")[0] == 200


def test_endpoint_close_releases_the_port() -> None:
    endpoint = MetricsEndpoint("127.0.0.1", 0, Registry(), lambda: Liveness(())).start()
    port = endpoint.port
    endpoint.close()
    MetricsEndpoint("127.0.0.1", port, Registry(), lambda: Liveness(())).close()
