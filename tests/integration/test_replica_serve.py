"""`safeloop serve` as operators run it: HTTP answers, readiness, status, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _serving_harness import FEATURES, REPO, ServingStack, free_port, serving_stack, wait_for

from safeloop.infra.settings import Settings
from safeloop.services.models.store import ARTIFACT_FILE, ModelStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, kafka: Settings) -> Iterator[ServingStack]:
    with serving_stack(tmp_path_factory.mktemp("serve"), kafka) as serving:
        yield serving


def safeloop(serving: ServingStack, *argv: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safeloop.services.cli.main", *argv],
        cwd=REPO,
        env={**os.environ, **serving.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_answers_reports_and_stops_cleanly(serving: ServingStack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = safeloop(serving, "serve", "--replica-id", "srv-1", "--port", str(port))
    try:
        assert wait_for(lambda: ready(url) or server.poll() is not None, timeout_s=60)
        assert server.poll() is None, server.communicate()[1]
        answer = httpx.post(f"{url}/predict", json={"routing_key": "u-1", "features": FEATURES})
        assert answer.status_code == 200
        assert answer.json()["model_version"] == "v1"
        bad = httpx.post(f"{url}/predict", json={"routing_key": "u-1", "features": {"age": 1}})
        assert bad.status_code == 422
        assert "missing features" in bad.json()["detail"]
        batch = httpx.post(
            f"{url}/predict/batch",
            json={"rows": [{"routing_key": f"u-{i}", "features": FEATURES} for i in range(5)]},
        )
        assert len(batch.json()["predictions"]) == 5
        health = httpx.get(f"{url}/healthz").json()
        assert health["replica_id"] == "srv-1"
        assert health["models"] == {"churn": ["v1", "v2", "v3"]}
        metrics = httpx.get(f"{url}/metrics").text
        assert 'safeloop_requests_total{model="churn",version="v1",route="production"} 7' in metrics

        def reported_ready() -> dict[str, object] | None:
            status = safeloop(serving, "status", "--json")
            out, err = status.communicate(timeout=60)
            assert status.returncode == 0, err
            replicas = {r["replica_id"]: r for r in json.loads(out)["replicas"]}
            replica = replicas.get("srv-1")
            return replica if replica and replica["state"] == "ready" else None

        replica = wait_for(reported_ready, timeout_s=30, every_s=0.5)
        assert replica is not None and replica["live"] is True
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


def test_serve_refuses_to_start_on_a_broken_artifact(serving: ServingStack, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    source = ModelStore(serving.settings.models_path)
    loaded = source.load("churn", "v1")
    store.save(loaded.model, loaded.metadata)  # type: ignore[arg-type]
    (store.path_of("churn", "v1") / ARTIFACT_FILE).write_bytes(b"garbage")
    server = safeloop(
        serving, "serve", "--port", str(free_port()), SAFELOOP_MODEL_DIR=str(store.root)
    )
    _, err = server.communicate(timeout=60)
    assert server.returncode == 1
    assert "cannot load model" in err and "model.npz is unreadable" in err
