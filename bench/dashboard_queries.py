"""Dashboard queries at scale: every query the dashboard (and the Grafana JSON) runs, timed.

Data is generated inside ClickHouse (INSERT ... SELECT FROM numbers()), so 100 million
predictions go through the same materialised views as live inserts: seven days of traffic for
one model (production v1, canary v2, shadow v1s), a share of it labelled (feedback, outcomes),
and a window of performance, drift and health figures per minute, control events, retraining
decisions. The endpoint runs as `safeloop warehouse start` would (its own process, HTTP), and
the queries go through clickhouse-connect with readonly=1, as the dashboard sends them.
Run: `python -m bench.dashboard_queries [--rows N] [--runs R]`; writes
bench/results/dashboard_queries.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from safeloop.infra.clickhouse import clickhouse_client
from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse import WarehouseProcess
from safeloop.services.dashboard import fairness_queries, queries
from safeloop.services.dashboard.reader import READ_ONLY_SETTINGS
from safeloop.services.rollout.machine import Phase
from safeloop.services.rollout.persist import STATE_KEY

RESULTS = Path(__file__).parent / "results" / "dashboard_queries.json"
MODEL = "fraud"
DAYS = 7
CHUNK = 10_000_000
RANGES_MINUTES = (60, 24 * 60, DAYS * 24 * 60)
BUDGET_MS = 200.0
log = logging.getLogger("bench.dashboard_queries")

# Row n of `numbers()`: its time spreads N rows evenly over DAYS ending at {end}; route by n % 20.
_ROUTE = "multiIf(n % 20 < 17, 'production', n % 20 < 19, 'canary', 'shadow')"
_VERSION = "multiIf(n % 20 < 17, 'v1', n % 20 < 19, 'v2', 'v1s')"
_TIME = "{end} - toIntervalMillisecond(intDiv(({rows} - 1 - n) * {span_ms}, {rows}))"
# Two segment keys per request (the fairness view groups by one): 5 countries, 3 devices.
_SEGMENTS = (
    "map('country', ['DE', 'FR', 'IT', 'ES', 'SE'][n % 5 + 1], "
    "'device', ['ios', 'android', 'web'][intDiv(n, 5) % 3 + 1])"
)

PREDICTIONS = f"""
INSERT INTO predictions (prediction_id, model_name, model_version, timestamp, features,
    prediction, confidence, latency_ms, route, replica_id, routing_key, routing_hash_version, error,
    segments)
SELECT toString(n), '{MODEL}', {_VERSION}, {_TIME},
    map('amount', randNormal(100, 20), 'age', randNormal(40, 10), 'tenure', randExponential(0.1)),
    p, greatest(p, 1 - p), 4 + randExponential(0.1) + if(n % 20 >= 17, 3, 0), {_ROUTE},
    concat('replica-', toString(n % 2)), toString(n % 100000), 1,
    if(rand() % 1000 < if(n % 20 >= 17, 15, 3), 'timeout', NULL), {_SEGMENTS}
FROM (SELECT number AS n, rand() / 4294967295.0 AS p FROM numbers({{start}}, {{count}}))
"""
FEEDBACK = f"""
INSERT INTO feedback (prediction_id, model_name, model_version, route, replica_id, features,
    prediction, confidence, prediction_timestamp, status, ground_truth, outcome_timestamp,
    label_delay_ms, outcome_source, emitted_at, segments)
SELECT toString(n), '{MODEL}', {_VERSION}, {_ROUTE}, 'replica-0', map(), 0.5, 0.5, t, 'joined',
    rand() % 2, t + toIntervalSecond(30), 30000, 'labels', t + toIntervalSecond(30), {_SEGMENTS}
FROM (SELECT number AS n, {_TIME} AS t FROM numbers({{start}}, {{count}}))
WHERE n % 10 < {{labelled_tenths}}
"""
OUTCOMES = f"""
INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source)
SELECT toString(n), rand() % 2, {_TIME} + toIntervalSecond(30), 'labels'
FROM (SELECT number AS n FROM numbers({{start}}, {{count}}))
WHERE n % 10 < {{labelled_tenths}}
"""
# Per-minute windows for three (version, route) pairs; metric names as services.metrics writes.
_WINDOWS = """
FROM (SELECT {end} - toIntervalMinute(number) AS window_end, number AS w
      FROM numbers({minutes}))
ARRAY JOIN [('v1', 'production'), ('v2', 'canary'), ('v1s', 'shadow')] AS vr
"""
PERFORMANCE = (
    """
INSERT INTO performance_metrics (model_name, model_version, route, window_start, window_end,
    metric, value, sample_count)
SELECT 'fraud', vr.1, vr.2, window_end - toIntervalMinute(1), window_end, m.1, m.2, 500
"""
    + _WINDOWS
    + """
ARRAY JOIN arrayConcat(
    [('accuracy', 0.9 - 0.05 * sin(w / 300)), ('f1', 0.85 - 0.05 * sin(w / 300)),
     ('roc_auc', 0.95), ('label_coverage', 0.2), ('expected_calibration_error', 0.03),
     ('shadow_agreement_rate', 0.97)],
    arrayFlatten(arrayMap(b -> [
        (concat('reliability_bin_', leftPad(toString(b), 2, '0'), '_count'), 50.0),
        (concat('reliability_bin_', leftPad(toString(b), 2, '0'), '_mean_predicted'),
         b / 10 + 0.05),
        (concat('reliability_bin_', leftPad(toString(b), 2, '0'), '_observed_rate'),
         b / 10 + 0.05 - 0.03)], range(10)))) AS m
"""
)
HEALTH = (
    """
INSERT INTO health_metrics (model_name, model_version, route, window_start, window_end,
    metric, value, sample_count)
SELECT 'fraud', vr.1, vr.2, window_end - toIntervalMinute(1), window_end, m.1, m.2, 1000
"""
    + _WINDOWS
    + """
ARRAY JOIN [('request_count', 1000.0), ('error_rate', 0.003), ('latency_p95_ms', 25.0)] AS m
"""
)
DRIFT = (
    """
INSERT INTO drift_metrics (model_name, model_version, route, window_start, window_end, metric,
    feature, value, sample_count, labels)
SELECT 'fraud', vr.1, vr.2, window_end - toIntervalMinute(1), window_end, m, f.1,
    f.2 * (1 + w % 7 / 10), 1000, map()
"""
    + _WINDOWS
    + """
ARRAY JOIN ['psi', 'ks', 'js_divergence', 'wasserstein', 'missing_fraction'] AS m
ARRAY JOIN [('amount', 0.31), ('age', 0.04), ('tenure', 0.12), ('', 0.02)] AS f
"""
)
CONTROL = """
INSERT INTO control_log (entry_type, command_id, model_name, kind, sequence, issued_at, issuer,
    reason, production_version, canary_version, canary_basis_points, canary_enabled,
    shadow_version, shadow_enabled, kill_switch, fallback_version, flags, key_id, signature,
    details)
SELECT 'command', toString(number), 'fraud', if(number % 9 = 8, 'rollback', 'set_canary'),
    number, {end} - toIntervalMinute(({minutes} - number * 20)), 'canary-stepper',
    'step after a healthy interval', 'v1', 'v2', toInt32((number % 9) * 1000 + 500), true, 'v1s',
    true, false, NULL, map(), 'k1', 'sig', map('step', toString(number % 9))
FROM numbers(intDiv({minutes}, 20))
"""
RETRAINING = """
INSERT INTO retraining_decisions (decision_id, model_name, model_version, timestamp,
    should_retrain, urgency, reason, max_psi, performance_drop, drifted_features)
SELECT toString(number), 'fraud', 'v1', {end} - toIntervalHour(number), number % 5 = 0,
    if(number % 5 = 0, 'elevated', 'none'), 'psi of amount above 0.25', 0.31, 0.02, ['amount']
FROM numbers({hours})
"""


def generate(settings: Settings, rows: int, end: datetime, labelled_tenths: int) -> float:
    """Fill the database; returns the seconds spent on the big inserts."""
    span_ms = DAYS * 86_400_000
    stamp = f"toDateTime64('{end:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    fmt = {"end": stamp, "rows": rows, "span_ms": span_ms}
    minutes = DAYS * 24 * 60
    client = clickhouse_client(settings, send_receive_timeout=7200)
    started = time.perf_counter()
    try:
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            for name, template in (
                ("predictions", PREDICTIONS),
                ("feedback", FEEDBACK),
                ("outcomes", OUTCOMES),
            ):
                sql = template.format(
                    **fmt, start=start, count=count, labelled_tenths=labelled_tenths
                )
                t0 = time.perf_counter()
                client.command(sql, settings={"max_insert_threads": 2})
                log.info(
                    "%s rows %d..%d in %.1fs", name, start, start + count, time.perf_counter() - t0
                )
        big = time.perf_counter() - started
        small = {"minutes": minutes, "hours": DAYS * 24, "end": stamp}
        for template in (PERFORMANCE, HEALTH, DRIFT, CONTROL, RETRAINING):
            client.command(template.format(**small))
        # Let background merges catch up, as they would on a live system within minutes.
        client.command("OPTIMIZE TABLE serving_minutes_agg FINAL")
        client.command("OPTIMIZE TABLE serving_hours_agg FINAL")
    finally:
        client.close()
    return big


def dashboard_queries(end: datetime, minutes: int) -> list[queries.Query]:
    scope = queries.Scope.last(MODEL, minutes, now=end)
    since = end - timedelta(minutes=minutes)
    # What the Grafana latency panel sends once its macros are expanded ($__timeInterval).
    rollup = scope.rollup
    grafana = queries.bind(
        "grafana_latency_panel",
        f"SELECT toStartOfInterval({rollup.time_column}, toIntervalSecond({{step:UInt32}})) "
        "AS time, concat(model_version, ' ', route) AS series, "
        "quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms)[2] AS p95 "
        f"FROM {rollup.table} WHERE model_name = {{model:String}} "
        f"AND {rollup.range_filter()} GROUP BY time, series ORDER BY time",
        scope.parameters(),
    )
    # Beyond a day the fairness view reads the hourly rollup; the raw scans it replaced are
    # timed beside it, on the same data (the before and after of bench/results).
    fairness = [
        fairness_queries.group_serving(scope, "country", fairness_queries.Source.RAW),
        fairness_queries.group_labels(scope, "country", fairness_queries.Source.RAW),
    ]
    if scope.rollup is queries.HOURS:
        fairness += [
            fairness_queries.group_serving(scope, "country"),
            fairness_queries.group_labels(scope, "country"),
        ]
    return [
        queries.models(since),
        queries.traffic_mix(scope),
        queries.serving_config(MODEL),
        queries.control_events(scope),
        queries.serving_series(scope),
        queries.window_series(scope),
        queries.reliability(scope),
        queries.drift_table(scope),
        queries.retraining(scope),
        queries.labelling_queue(MODEL, end - timedelta(minutes=15)),
        queries.pending_approvals(STATE_KEY, Phase.AWAITING_APPROVAL.value),
        fairness_queries.segment_keys(scope),
        *fairness,
        fairness_queries.model_task(scope),
        grafana,
    ]


def time_queries(settings: Settings, end: datetime, runs: int) -> list[dict[str, Any]]:
    client = clickhouse_client(settings)
    results = []
    try:
        for minutes in RANGES_MINUTES:
            for query in dashboard_queries(end, minutes):
                seconds, rows = [], 0
                try:
                    for _ in range(runs + 1):  # the first run warms caches and is not counted
                        t0 = time.perf_counter()
                        result = client.query(
                            query.sql,
                            parameters=dict(query.parameters),
                            settings=READ_ONLY_SETTINGS,
                        )
                        seconds.append(time.perf_counter() - t0)
                        rows = len(result.result_rows)
                except DatabaseError as exc:
                    if "TIMEOUT_EXCEEDED" not in str(exc):
                        raise
                    # The dashboard would show this panel's error: recorded, not fatal.
                    entry = {
                        "query": query.name,
                        "range_minutes": minutes,
                        "over_dashboard_limit_s": READ_ONLY_SETTINGS["max_execution_time"],
                    }
                    log.info("%s", entry)
                    results.append(entry)
                    continue
                timed = sorted(seconds[1:])
                # The raw fairness scans beyond a day: timed as the baseline of the rollup.
                replaced = query.name in ("group_serving", "group_labels") and (
                    minutes * 60 > queries.HOURLY_AFTER_SECONDS
                )
                p95 = timed[min(len(timed) - 1, round(0.95 * (len(timed) - 1)))]
                entry = {
                    "query": query.name,
                    "range_minutes": minutes,
                    "rows_returned": rows,
                    "median_ms": round(1000 * statistics.median(timed), 2),
                    "p95_ms": round(1000 * p95, 2),
                    "max_ms": round(1000 * timed[-1], 2),
                }
                if replaced:
                    entry["baseline_replaced_by_rollup"] = True
                log.info("%s", entry)
                results.append(entry)
    finally:
        client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000, help="prediction rows")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query")
    parser.add_argument("--labelled-tenths", type=int, default=2, help="labelled share, 0-10")
    parser.add_argument("--state-dir", type=Path, help="keep the data here (default: temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file ({RESULTS.name})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        state = args.state_dir or Path(tmp)
        settings = replace(
            Settings.from_env(),
            state_dir=state,
            warehouse_port=free_port(),
            clickhouse_url=None,
            clickhouse_database="bench_dashboard",
        )
        process = WarehouseProcess(settings, startup_timeout=120.0)
        process.start()
        try:
            migrate(settings)
            end = datetime.now(UTC).replace(microsecond=0)
            insert_seconds = generate(settings, args.rows, end, args.labelled_tenths)
            counts = _counts(settings)
            results = time_queries(settings, end, args.runs)
        finally:
            process.stop()
    # What the dashboard runs: the raw fairness scans a rollup replaced are baselines only.
    slowest = max(
        r.get("p95_ms", math.inf) for r in results if not r.get("baseline_replaced_by_rollup")
    )
    report = {
        "benchmark": "dashboard_queries",
        "prediction_rows": args.rows,
        "table_rows": counts,
        "days": DAYS,
        "runs_per_query": args.runs,
        "generate_seconds": round(insert_seconds, 1),
        "budget_ms": BUDGET_MS,
        "slowest_p95_ms": slowest,
        "within_budget": slowest < BUDGET_MS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "path": "clickhouse-connect -> embedded endpoint (HTTP) -> chDB, readonly=1",
        "queries": results,
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s; slowest p95 %.1f ms", args.out, slowest)


def _counts(settings: Settings) -> dict[str, int]:
    client = clickhouse_client(settings)
    try:
        tables = (
            "predictions",
            "feedback",
            "outcomes",
            "serving_minutes_agg",
            "serving_hours_agg",
            "performance_metrics",
            "drift_metrics",
            "control_log",
        )
        return {t: int(client.command(f"SELECT count() FROM {t}")) for t in tables}  # type: ignore[arg-type]
    finally:
        client.close()


if __name__ == "__main__":
    main()
