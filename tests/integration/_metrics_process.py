"""`safeloop metrics run` as a separate process (so tests can SIGKILL it), with its HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _metrics_harness import wait_for

from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings

REPO = Path(__file__).resolve().parents[2]
METRICS_RUN = [sys.executable, "-m", "safeloop.services.cli.main", "metrics", "run"]


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of GET `path`; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())
    except OSError:
        return 0, {}


@dataclass
class MetricsProcess:
    process: subprocess.Popen[bytes]
    port: int

    def health(self) -> dict[str, Any]:
        return get_json(self.port, "/healthz")[1]

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        self.process.kill()
        self.process.wait(30)


@contextmanager
def metrics_process(
    settings: Settings, *args: str, ready: bool = True, log: Path | None = None
) -> Iterator[MetricsProcess]:
    """`safeloop metrics run ARGS` in its own process (ready unless told otherwise), its
    output appended to `log` if given; killed on exit if still running."""
    port = free_port()
    with open(log, "ab") if log is not None else open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            [*METRICS_RUN, *args, "--http-port", str(port)],
            cwd=REPO,
            env={**os.environ, **settings.to_env()},
            stdout=out,
            stderr=out,
        )
    started = MetricsProcess(process, port)
    try:
        if ready:
            assert wait_for(lambda: get_json(port, "/readyz")[0] == 200, 120), "never ready"
        yield started
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
