"""Small operator-facing answers: an idempotent `kafka stop`, defaults in `metrics run --help`."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from safeloop.infra.process_logging import KAFKA_CLIENT_LOGGER
from safeloop.services.cli.main import build_parser, main


def test_kafka_stop_when_not_running_succeeds_and_says_nothing_was_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAFELOOP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["kafka", "stop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Kafka was not running; nothing to stop")
    assert main(["kafka", "stop", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["running"], answer["was_running"]) == (False, False)


def test_metrics_run_help_shows_every_threshold_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["metrics", "run", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in (
        ("--max-error-rate", "0.05"),
        ("--max-p99-latency-ms", "1000.0"),
        ("--max-p99-latency-ratio", "2.0"),
        ("--max-performance-drop", "0.05"),
        ("--min-requests", "100"),
        ("--min-labelled", "100"),
        ("--guard-window-rows", "1000"),
    ):
        shown = re.search(re.escape(option) + r" \S+ [^-]*?\(default: ([^)]+)\)", text)
        assert shown is not None, option
        assert shown.group(1) == default, (option, shown.group(1))


@pytest.mark.parametrize("bad", ["", "pod 0", "a/b", "x" * 250])
def test_metrics_run_refuses_an_instance_id_kafka_would_refuse(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["metrics", "run", "--instance-id", bad])
    assert exited.value.code == 2
    assert "--instance-id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["kafka", "start", "--bogus"], "usage: safeloop kafka start"),
        (["topics", "list", "--bogus"], "usage: safeloop topics list"),
        (
            ["plan", "--predictions-per-s", "10", "--label-delay", "1d", "--bogus"],
            "usage: safeloop plan",
        ),
    ],
)
def test_an_unknown_option_is_refused_with_its_sub_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize(("argv", "quiet"), [(["plan"], True), (["-v", "plan"], False)])
def test_one_off_commands_leave_unreachable_broker_lines_to_their_own_report(
    argv: list[str], quiet: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_log = logging.getLogger(KAFKA_CLIENT_LOGGER)
    monkeypatch.setattr(client_log, "level", logging.NOTSET)
    main([*argv, "--predictions-per-s", "10", "--label-delay", "1d"])
    assert (client_log.level == logging.CRITICAL) is quiet


@pytest.mark.parametrize(
    "argv",
    [["process"], ["serve"], ["metrics", "run"], ["dashboard"], ["ingest"], ["shadow-scorer"],
     ["retrain", "run"]],
)  # fmt: skip
def test_services_keep_the_kafka_clients_log_lines(argv: list[str]) -> None:
    args, _ = build_parser(argv[0]).parse_known_args(argv)
    assert args.service is True


def test_topics_list_gives_up_on_an_unreachable_broker_within_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAFELOOP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens on port 1
    started = time.monotonic()
    assert main(["topics", "list", "--timeout-s", "1"]) == 1
    assert time.monotonic() - started < 8
    assert "is Kafka running at 127.0.0.1:1?" in capsys.readouterr().err
    listing = build_parser().parse_args(["topics", "list"])
    assert listing.timeout_s == 10.0
