"""One error tree: every error safeloop defines descends from SafeloopError, lives in an
`exceptions.py`, has a name of its own, and the CLI turns it into one line and an exit code."""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
from collections import defaultdict
from pathlib import Path

import pytest

from safeloop import SafeloopError
from safeloop.infra.exceptions import DeliveryError, SettingsError, WarehouseError
from safeloop.infra.settings import Settings
from safeloop.services.cli import main as cli_main
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.exit_codes import ExitCode, exit_code_for
from safeloop.services.control.exceptions import ControlTopicError, WaitTimeoutError
from safeloop.services.publishing.exceptions import (
    CheckpointError,
    IngestBindError,
    InputFileError,
)
from safeloop.services.rollout.exceptions import PlanError, TransitionError
from safeloop.streams.exceptions import StreamError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "infra", "streams", "services")


def _error_classes() -> list[tuple[Path, str]]:
    """(file, class name) of every class in the packages whose name ends in Error/Exception."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    found.append((path, node.name))
    return found


def _module_name(path: Path) -> str:
    return "safeloop." + ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_every_public_error_class_lives_in_an_exceptions_module() -> None:
    outside = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name in _error_classes()
        if path.name != "exceptions.py" and not name.startswith("_")
    ]
    assert outside == []


def test_every_error_class_descends_from_safeloop_error() -> None:
    strays = []
    for path, name in _error_classes():
        if name.startswith("_"):
            continue
        cls = getattr(importlib.import_module(_module_name(path)), name)
        if not issubclass(cls, SafeloopError):
            strays.append(f"{_module_name(path)}.{name}")
    assert strays == []


def test_no_two_error_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path, name in _error_classes():
        where[name].append(str(path.relative_to(ROOT)))
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (WaitTimeoutError("churn", 7, ["replica-a"], 5.0), ExitCode.TIMEOUT),
        (UsageError("--percent must be 0-100"), ExitCode.USAGE),
        (SettingsError("SAFELOOP_X", "nope", "an integer"), ExitCode.USAGE),
        (PlanError("steps must increase"), ExitCode.USAGE),
        (ControlTopicError("control topic unreachable"), ExitCode.FAILURE),
        (TransitionError("rollout already finished"), ExitCode.FAILURE),
        (StreamError("boom", topic="predictions", partition=1, offset=9), ExitCode.FAILURE),
        (WarehouseError("ClickHouse down"), ExitCode.FAILURE),
        (InputFileError("labels.txt: use --format"), ExitCode.USAGE),
        (CheckpointError("checkpoint of another file"), ExitCode.USAGE),
        (IngestBindError("0.0.0.0 without a token"), ExitCode.USAGE),
        (DeliveryError("outcomes", 10, 3, "broker down"), ExitCode.FAILURE),
    ],
)
def test_cli_maps_each_error_family_to_its_exit_code(error: SafeloopError, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def _run_failing(monkeypatch: pytest.MonkeyPatch, error: Exception, *argv: str) -> int:
    """Run `safeloop [argv] boom`, a sub-command that raises `error`."""

    def fail(args: argparse.Namespace, settings: Settings) -> int:
        raise error

    real = cli_main.build_parser

    def parser_with_failing_command(command: str | None = None) -> argparse.ArgumentParser:
        parser = real(command)
        subparsers = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        subparsers.add_parser("boom").set_defaults(func=fail)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", parser_with_failing_command)
    return cli_main.main([*argv, "boom"])


def test_cli_reports_an_expected_failure_in_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SAFELOOP_LOG_LEVEL", raising=False)
    error = StreamError("sink gave up", topic="predictions", partition=2, offset=41)
    code = _run_failing(monkeypatch, error)
    err = capsys.readouterr().err
    assert code == ExitCode.FAILURE
    assert err == "safeloop: sink gave up (at predictions[2]@41)\n"
    assert "Traceback" not in err


def test_cli_debug_flag_logs_the_traceback_of_a_failure(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("SAFELOOP_LOG_LEVEL", raising=False)
    with caplog.at_level(logging.ERROR, logger="safeloop.cli"):
        code = _run_failing(monkeypatch, UsageError("no such step"), "--debug")
    assert code == ExitCode.USAGE
    assert capsys.readouterr().err.startswith("safeloop: no such step")
    records = [r for r in caplog.records if r.name == "safeloop.cli"]
    assert records and records[0].exc_info is not None
    assert records[0].exc_info[0] is UsageError


def test_cli_debug_log_level_setting_also_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SAFELOOP_LOG_LEVEL", "DEBUG")
    with caplog.at_level(logging.ERROR, logger="safeloop.cli"):
        code = _run_failing(monkeypatch, ControlTopicError("control topic unreachable"))
    assert code == ExitCode.FAILURE
    assert any(r.exc_info is not None for r in caplog.records if r.name == "safeloop.cli")


def test_cli_reports_bad_settings_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAFELOOP_PARTITIONS", "many")
    code = _run_failing(monkeypatch, AssertionError("never runs: settings fail first"))
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("safeloop: ") and "SAFELOOP_PARTITIONS" in err
    assert "Traceback" not in err
