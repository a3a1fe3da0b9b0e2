"""README's "Failures we test" table, printed from the chaos tier's last run.

Not a benchmark: the chaos tests (tests/chaos) write bench/results/chaos_<scenario>.json;
`python -m bench.chaos_table` turns them into the table's Markdown rows, in the tier's order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = (
    "broker_failover",
    "worker_kill",
    "metrics_kill",
    "replica_kill",
    "clickhouse_outage",
    "combined",
)
HEADER = (
    "| fault | load | events acknowledged | events lost | rows doubled | serving errors "
    "| serving p99 | time to recover |\n|---|---|---|---|---|---|---|---|"
)


def _local_guard(replicas: list[dict[str, Any]]) -> str:
    """The replicas' local guards in the failover: when each took the canary out of its own
    traffic, from the breach becoming measurable in that replica's answers."""
    local = [
        f"{seconds} s"
        for r in replicas
        if r["out_of_traffic_by"] == "local"
        and (seconds := r["measurable_here_to_out_of_traffic_s"]) is not None
    ]
    if not local:
        return ""
    return (
        "; the replicas' local guards took it out of their traffic "
        f"**{' and '.join(local)}** after the breach was measurable in their own answers, "
        "Kafka or not"
    )


def _recovery(name: str, r: dict[str, Any]) -> str:
    if name == "broker_failover":
        breach = r["breach"]
        return (
            f"new leaders {r['leaders_moved_s']} s and writes acknowledged again "
            f"{r['recover_s']} s after the kill; back in every ISR at {r['rejoined_isr_s']} s; "
            "the canary breaching "
            f"during the failover (measurable {breach['measurable_after_kill_s']} s after the "
            f"kill) rolled back on both replicas **{breach['measurable_to_rolled_back_s']} s** "
            f"after its breach became measurable (target {breach['target_s']:g} s), "
            f"{breach['writable_to_rolled_back_s']} s after Kafka was writable again"
            + _local_guard(breach.get("local_guard", []))
        )
    if name == "worker_kill":
        caught_up = (
            f"every acknowledged event in ClickHouse {r['recover_s']} s after the kill"
            if not any(r["lost"].values())
            else f"the processor had not caught up when the wait ended ({r['recover_s']} s)"
        )
        return f"restarted {r['restarted_s']} s after the kill; {caught_up}"
    if name == "metrics_kill":
        return (
            f"down {r['down_s']} s; restarted service ready in "
            f"{r['metrics_ready_after_restart_s']} s, breaching canary rolled back on both "
            f"replicas {r['rolled_back_after_restart_s']} s after the restart "
            f"(by {r['rollback_decided_by']})"
        )
    if name == "replica_kill":
        return (
            f"live replicas on the rollback {r['live_replicas_converged_s']} s after the kill; "
            f"the restarted one ready and on it {r['restarted_replica_converged_s']} s after "
            "its restart"
        )
    if name == "combined":
        return (
            f"the flag published by `safeloop flag` {r['command_published_s']} s after the faults"
            + (
                " (the CLI waited for the control partition's new leader)"
                if r.get("cli_waited_for_a_leader")
                else ""
            )
            + " and applied on "
            f"the live replicas at {r['live_replicas_converged_s']} s; restarts at "
            f"{r['down_s']} s; the restarted replica on it at "
            f"{r['restarted_replica_converged_s']} s, the broker back in every ISR at "
            f"{r['rejoined_isr_s']} s, every acknowledged event in ClickHouse at "
            f"{r['recover_s']} s"
        )
    return f"everything landed {r['recover_s']} s after the endpoint was back"


def _lost(r: dict[str, Any]) -> str:
    lost = r["lost"]
    if not any(lost.values()):
        return "0"
    counts = (
        f"{lost['predictions']:,} / {lost['outcomes']:,} / {lost['feedback']:,} "
        "(predictions / outcomes / joined)"
    )
    if r.get("landed_after_s") is None:
        # The count gave up waiting: late (the processor behind) or lost, it cannot say which.
        return f"not in ClickHouse when the 300 s wait ended: {counts}"
    return counts


def row(name: str, r: dict[str, Any]) -> str:
    load = r["load"]
    serving = r["serving"]
    errors = str(serving["errors"])
    if r.get("injected_canary_errors"):
        errors += f" (all {r['injected_canary_errors']} injected canary failures)"
    acked = r["acknowledged_during_scenario"]
    total = r["acknowledged_total"]["predictions"]
    cells = [
        r["fault"],
        f"{acked / r['scenario_s']:.0f} prediction + outcome pairs/s achieved (paced at "
        f"{load['pairs_per_s']}/s); {load['requests_per_s']} requests/s on 2 replicas",
        f"{acked:,} prediction + outcome pairs during it ({total:,} since the loop started)",
        _lost(r),
        f"{sum(r['doubled'].values())} (predictions, outcomes, joined feedback)",
        errors,
        f"{serving['p99_ms']} ms ({serving['requests']:,} requests)",
        _recovery(name, r),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    lines = [HEADER]
    for name in ORDER:
        path = RESULTS / f"chaos_{name}.json"
        if path.exists():
            lines.append(row(name, json.loads(path.read_text())))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
