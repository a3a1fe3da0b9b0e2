"""ClickHouse goes away mid-stream: the worker backs off, counts retries, lets lag grow, and
lands everything once ClickHouse is back, with nothing lost or doubled."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import (
    Run,
    free_port,
    new_run,
    outcome,
    prediction,
    wait_for,
)

from safeloop.infra.clickhouse.migrate import migrate
from safeloop.infra.prometheus_scrape import scrape_total
from safeloop.infra.warehouse.process import WarehouseProcess

pytestmark = pytest.mark.integration


def metric(port: int, name: str) -> float:
    return scrape_total(f"http://127.0.0.1:{port}/metrics", name, 10.0)


def test_clickhouse_outage_backs_off_then_recovers_without_loss(stack: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="stream-outage-") as tmp:
        # The session's broker, but a warehouse of this test's own, in its own process, so it
        # can be stopped.
        fresh = stack.fresh("stream_outage")
        port = free_port()
        own = replace(fresh, state_dir=Path(tmp) / "wh", warehouse_port=port, clickhouse_url=None)
        warehouse = WarehouseProcess(own)
        warehouse.start()
        try:
            private = replace(fresh, clickhouse_url=warehouse.url)
            migrate(private)
            run: Run = new_run(private, Path(tmp), window_ms=600_000)
            web = free_port()
            run.start_worker(0, web)
            try:
                for i in range(200):
                    run.send_prediction(prediction(f"o-{i}"))
                    run.send_outcome(outcome(f"o-{i}"))
                run.flush()
                joined = "SELECT count() FROM feedback FINAL WHERE status = 'joined'"
                assert wait_for(lambda: run.count(joined) == 200, 90), run.worker_log("worker-0")
                warehouse.stop()
                for i in range(200, 600):
                    run.send_prediction(prediction(f"o-{i}"))
                    run.send_outcome(outcome(f"o-{i}"))
                run.flush()
                assert wait_for(lambda: metric(web, "safeloop_sink_retries_total") >= 2, 60)
                assert wait_for(
                    lambda: (
                        metric(web, "safeloop_sink_consecutive_failures") >= 1
                        and metric(web, "safeloop_stream_lag") > 0
                    ),
                    30,
                ), run.worker_log("worker-0")
                assert wait_for(lambda: "failed (attempt" in run.worker_log("worker-0"), 10)
                time.sleep(2)
                warehouse.start()
                assert wait_for(lambda: run.count(joined) == 600, 120), run.worker_log("worker-0")
                assert wait_for(lambda: metric(web, "safeloop_stream_lag") == 0, 60)
                assert metric(web, "safeloop_sink_consecutive_failures") == 0
                assert run.count("SELECT count() FROM outcomes FINAL") == 600
                assert run.count("SELECT count() FROM predictions FINAL") == 600
            finally:
                run.stop_all()
        finally:
            warehouse.stop()
