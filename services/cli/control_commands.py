"""Operator commands on the control topic: rollback, canary, promote, flag, shadow, status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.fault_injection import (
    add_inject_arguments,
    describe_injection,
    inject_change,
)
from safeloop.services.cli.preflight_gate import (
    GATED_COMMANDS,
    add_force_flag,
    check_before_publish,
)
from safeloop.services.cli.unreachable_hint import unreachable_hint
from safeloop.services.control.exceptions import CommandError, ControlError
from safeloop.services.models.exceptions import ModelError
from safeloop.services.serving.flags import FlagValue, decode_flag, encode_flag

# Kafka's client, the Avro codec and the wait are imported by the commands that use them:
# `--help` and `keygen` never load them (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from safeloop.services.control.fleet import FleetSnapshot
    from safeloop.services.control.keys import KeyRing
    from safeloop.services.control.publisher import ConfigChange, ControlTopicView

# Seconds to let the control_log row land after the command is published (it has taken effect).
AUDIT_TIMEOUT_S = 10.0

EPILOG = (
    "exit codes: 0 ok (with --wait: in force on every live replica), 1 failure (no key, Kafka "
    "unreachable, nothing to promote, ...), 2 usage, 3 --wait timed out (laggards named), "
    "4 lost its sequence to a concurrent publisher (after --retries) or, with --wait, "
    "superseded by a newer command, 5 --wait: refused by a replica. With --wait, "
    "one line per replica on stderr as it decides (not with --json)."
)
# Flag names that steer the model config itself rather than the free-form flag map.
CONFIG_FLAGS = ("canary", "shadow", "kill_switch", "fallback_version")

ChangeBuilder: TypeAlias = (
    "Callable[[argparse.Namespace], tuple[CommandKind, ConfigChange, dict[str, str]]]"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, help_text: str, builder: ChangeBuilder) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        parser.add_argument("model", metavar="MODEL")
        parser.set_defaults(func=_run_change, build_change=builder)
        return parser

    rollback = command("rollback", "send all traffic to production now", _rollback)
    rollback.add_argument("--to", metavar="VERSION", help="also make VERSION the production one")
    canary = command("canary", "set the share of traffic served by the canary", _canary)
    canary.add_argument("--percent", type=float, required=True, help="0-100, step 0.01")
    canary.add_argument("--version", help="the canary version (default: the current canary)")
    command("promote", "make the canary the production version", _promote)
    flag = command(
        "flag",
        "set a feature flag (canary, shadow, kill_switch, fallback_version "
        "steer routing; any other name is a model flag)",
        _flag,
    )
    flag.add_argument("name", metavar="NAME")
    flag.add_argument("value", metavar="VALUE", nargs="?", help="true/false, a number or text")
    flag.add_argument("--unset", action="store_true", help="remove the model flag NAME")
    shadow = command("shadow", "score a shadow version off the request path", _shadow)
    shadow.add_argument("state", choices=["on", "off"])
    shadow.add_argument("--version", help="the shadow version (default: the current one)")
    add_inject_arguments(
        command("inject", "rehearse: fail or slow down one version for a while", inject_change)
    )

    for name in ("rollback", "canary", "promote", "flag", "shadow", "inject"):
        parser = subparsers.choices[name]
        parser.add_argument(
            "--reason",
            required=name == "rollback",
            default="",
            help="why (recorded in the command)",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="return once every live replica applied it, was superseded or refused it",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds to --wait (default 30)",
        )
        parser.add_argument(
            "--production-version",
            metavar="VERSION",
            help="production version if the model has no command yet "
            "(default: the model store's oldest version)",
        )
        parser.add_argument(
            "--retries",
            type=int,
            default=3,
            metavar="N",
            help="if another publisher took the sequence first, apply the change again on its "
            "config and republish, up to N times (default 3; 0: report it, exit 4)",
        )
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        if name in GATED_COMMANDS:
            add_force_flag(parser)

    status = subparsers.add_parser(
        "status",
        help="which replicas applied which control command",
        description="Each replica's applied config version per model, when it was last seen, "
        "and which live replicas have not applied the newest command. Needs no key: without "
        "SAFELOOP_CONTROL_KEY(_FILE) the commands are shown marked unverified.",
        epilog="exit codes: 0 ok, 1 failure (Kafka unreachable, ...)",
    )
    status.add_argument("model", metavar="MODEL", nargs="?")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_run_status)

    keygen = subparsers.add_parser(
        "keygen", help="print a new operator key line (key_id:hexsecret) for the key file"
    )
    keygen.add_argument("--key-id", default=time.strftime("ops-%Y%m%d"))
    keygen.set_defaults(func=_run_keygen)


# -- config changes ------------------------------------------------------------------------


def _rollback(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    def change(config: ModelConfig) -> ModelConfig:
        production = args.to or config.production_version
        return dataclasses.replace(
            config, production_version=production, canary_version=None, canary_basis_points=0
        )

    return CommandKind.ROLLBACK, change, {"to": args.to} if args.to else {}


def _canary(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    if not 0.0 <= args.percent <= 100.0:
        raise UsageError(f"--percent must be between 0 and 100, got {args.percent:g}")
    basis_points = round(args.percent * 100)

    def change(config: ModelConfig) -> ModelConfig:
        version = args.version or config.canary_version
        if version is None:
            raise CommandError("no canary version yet: name one with --version")
        if version == config.production_version:
            raise CommandError(f"{version} is already the production version")
        return dataclasses.replace(config, canary_version=version, canary_basis_points=basis_points)

    return CommandKind.SET_CANARY, change, {"percent": f"{args.percent:g}"}


def _promote(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    def change(config: ModelConfig) -> ModelConfig:
        if config.canary_version is None:
            raise CommandError("there is no canary to promote")
        return dataclasses.replace(
            config,
            production_version=config.canary_version,
            canary_version=None,
            canary_basis_points=0,
        )

    return CommandKind.PROMOTE, change, {}


def _parse_bool(name: str, value: str | None) -> bool:
    parsed = decode_flag(value) if value is not None else None
    if not isinstance(parsed, bool):
        raise UsageError(f"flag {name} takes true or false, got {value!r}")
    return parsed


def _flag(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    name: str = args.name
    if args.unset == (args.value is not None):
        raise UsageError("give either VALUE or --unset")
    if args.unset and name in CONFIG_FLAGS:
        raise UsageError(f"{name} steers routing and cannot be unset; set it instead")
    replace: dict[str, Any]
    if name in ("canary", "shadow", "kill_switch"):
        field = {"canary": "canary_enabled", "shadow": "shadow_enabled"}.get(name, name)
        replace = {field: _parse_bool(name, args.value)}
    elif name == "fallback_version":
        replace = {"fallback_version": None if args.value in ("", "none") else args.value}
    else:
        replace = {}

    def change(config: ModelConfig) -> ModelConfig:
        if replace:
            updated = dataclasses.replace(config, **replace)
            if updated.shadow_enabled and updated.shadow_version is None:
                raise CommandError(
                    "no shadow version yet: use `safeloop shadow MODEL on --version`"
                )
            return updated
        flags = dict(config.flags)
        if args.unset:
            if flags.pop(name, None) is None:
                raise CommandError(f"flag {name!r} is not set")
        else:
            value: FlagValue = decode_flag(args.value)
            flags[name] = encode_flag(value)
        return dataclasses.replace(config, flags=flags)

    return CommandKind.SET_FLAG, change, {"flag": name, "value": args.value or "(unset)"}


def _shadow(args: argparse.Namespace) -> tuple[CommandKind, ConfigChange, dict[str, str]]:
    def change(config: ModelConfig) -> ModelConfig:
        if args.state == "off":
            return dataclasses.replace(config, shadow_enabled=False)
        version = args.version or config.shadow_version
        if version is None:
            raise CommandError("no shadow version yet: name one with --version")
        return dataclasses.replace(config, shadow_version=version, shadow_enabled=True)

    return CommandKind.SET_SHADOW, change, {"state": args.state}


# -- running -------------------------------------------------------------------------------


def _run_change(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.clients import make_producer
    from safeloop.services.cli.audit_job import AuditJob
    from safeloop.services.cli.wait_report import wait_for_command
    from safeloop.services.control.clients import make_broadcast_reader
    from safeloop.services.control.keys import load_keyring
    from safeloop.services.control.publisher import (
        ControlPublisher,
        read_control_topic,
    )
    from safeloop.services.control.race import publish_settled, read_history

    try:
        if args.retries < 0:
            raise UsageError(f"--retries must be 0 or more, got {args.retries}")
        kind, change, details = args.build_change(args)
    except UsageError as exc:
        return _fail(args, str(exc), ExitCode.USAGE)
    try:
        keys = load_keyring(settings)
        publisher = ControlPublisher(
            make_producer(settings, acks="all", **{"linger.ms": 0}), settings.topics.control, keys
        )
        checks: list[dict[str, Any]] = []

        def read_view() -> ControlTopicView:
            return read_control_topic(
                make_broadcast_reader(settings, settings.topics.control, "cli"),
                keys,
                None if args.json else _say_waiting,
            )

        def build(view: ControlTopicView) -> ControlCommand:
            initial = _initial_config(settings, args, view)
            command = publisher.next_command(
                view, args.model, kind, change, reason=args.reason, initial=initial, details=details
            )
            checks.append(check_before_publish(settings, args, command))
            return command

        def history_of(command: ControlCommand) -> list[ControlCommand]:
            reader = make_broadcast_reader(settings, settings.topics.control, "cli")
            return read_history(reader, keys, command.model_name)

        settled = publish_settled(
            read_view,
            build,
            publisher.send,
            history_of,
            retries=args.retries,
            on_lost=None if args.json else _say_lost,
        )
        command = settled.command
        checked = checks[-1]
    except (ControlError, ModelError) as exc:
        return _fail(args, str(exc), ExitCode.FAILURE, error=exc, settings=settings)
    if not settled.in_force:
        rival = settled.lost_to[-1]
        message = (
            f"{kind.value} for {args.model} lost sequence {command.sequence} to command "
            f"{rival.command_id} from {rival.issuer} ({rival.kind.value}) after "
            f"{settled.attempts} attempt(s): replicas refuse it; nothing of it is in force"
        )
        if args.json:
            sys.stdout.write(
                json.dumps(
                    {
                        "error": message,
                        "exit_code": ExitCode.SUPERSEDED,
                        "command": _command_json(command),
                        "lost_to": [_command_json(c) for c in settled.lost_to],
                    },
                    indent=2,
                )
                + "\n"
            )
        else:
            sys.stderr.write(f"safeloop: {message}\n")
        return ExitCode.SUPERSEDED
    # Published: it takes effect now. The audit row and the wait follow, side by side.
    audit = AuditJob(settings, command)
    result: dict[str, Any] = {
        "command": _command_json(command),
        "preflight": checked,
        "attempts": settled.attempts,
        "lost_to": [_command_json(c) for c in settled.lost_to],
    }
    if not args.json:
        for note in checked.get("notes", []):
            sys.stderr.write(f"safeloop: pre-flight: {note}\n")
        sys.stdout.write(
            f"published {kind.value} for {args.model}: sequence {command.sequence} "
            f"({_describe(command.config)})\n"
        )
        sys.stdout.flush()
    code: int = ExitCode.OK
    if args.wait:
        code, result["wait"] = wait_for_command(
            settings, keys, command, args.timeout, stream=not args.json
        )
    failure = audit.finish(AUDIT_TIMEOUT_S)
    if failure is not None:
        # The command is on the control topic and replicas apply it: Kafka is the source of
        # truth, control_log only audits it. A ClickHouse outage is therefore a warning and
        # the exit code is unchanged (the command took effect); the row is not written later.
        sys.stderr.write(
            f"safeloop: warning: {kind.value} for {args.model} (command {command.command_id}) "
            f"took effect but is missing from the control_log audit table: {failure}\n"
        )
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return code


def _say_waiting(partition: int, waited_s: float) -> None:
    sys.stderr.write(
        f"safeloop: control partition {partition} has no reachable leader (a broker failover?): "
        f"waiting for the new one, {waited_s:.0f}s so far\n"
    )
    sys.stderr.flush()


def _say_lost(command: ControlCommand, rival: ControlCommand) -> None:
    sys.stderr.write(
        f"safeloop: sequence {command.sequence} for {command.model_name} went to command "
        f"{rival.command_id} from {rival.issuer} ({rival.kind.value}) first; rebasing on it\n"
    )


def _initial_config(
    settings: Settings, args: argparse.Namespace, view: ControlTopicView
) -> ModelConfig | None:
    if args.model in view.latest:
        return None
    if args.production_version:
        return ModelConfig(production_version=args.production_version)
    # Imported here: the model store needs numpy, and only a model's first command reads it.
    from safeloop.services.models.open_store import open_model_store

    try:
        return ModelConfig(
            production_version=open_model_store(settings).default_version(args.model)
        )
    except (ModelError, ValueError):
        return None


def _run_status(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.services.control.clients import make_broadcast_reader
    from safeloop.services.control.fleet import FleetWatcher
    from safeloop.services.control.publisher import read_control_topic

    try:
        keys = _keyring_if_configured(settings)
        view = read_control_topic(
            make_broadcast_reader(settings, settings.topics.control, "cli"),
            keys,
            None if args.json else _say_waiting,
        )
        reader = make_broadcast_reader(settings, settings.topics.replica_status, "cli-status")
        with FleetWatcher(reader, settings.replica_liveness_ms) as watcher:
            snapshot = watcher.read_to_end(15.0)
    except ControlError as exc:
        return _fail(args, str(exc), ExitCode.FAILURE, error=exc, settings=settings)
    models = (
        [args.model]
        if args.model
        else sorted(
            set(view.latest) | {m for s in snapshot.replicas.values() for m in s.config_versions}
        )
    )
    report = _status_report(models, view, snapshot)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_status_text(report))
    return ExitCode.OK


def _keyring_if_configured(settings: Settings) -> KeyRing | None:
    """Reading needs no key: without one, `status` shows commands marked unverified."""
    from safeloop.services.control.keys import load_keyring

    if settings.control_key_file is None and not settings.control_key:
        return None
    return load_keyring(settings)


def _status_report(
    models: list[str], view: ControlTopicView, snapshot: FleetSnapshot
) -> dict[str, Any]:
    report: dict[str, Any] = {"models": {}, "replicas": []}
    for model in models:
        newest = view.latest.get(model)
        sequence = newest.sequence if newest else 0
        report["models"][model] = {
            "newest_command": _command_json(newest) if newest else None,
            "config": _describe(newest.config) if newest else "no command yet",
            # False: read without a key, the signature was not checked (replicas do check it).
            "verified": view.verified,
            "laggards": snapshot.laggards(model, sequence),
        }
    for replica_id, status in sorted(snapshot.replicas.items()):
        report["replicas"].append(
            {
                "replica_id": replica_id,
                "state": status.state.value,
                "live": snapshot.is_live(status),
                "last_seen_ms_ago": snapshot.age_ms(status),
                "config_versions": {m: status.config_versions.get(m) for m in models},
                "refused_count": status.refused_count,
                "last_refusal": status.last_refusal,
            }
        )
    return report


def _status_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for model, info in report["models"].items():
        newest = info["newest_command"]
        head = f"{model}: {info['config']}"
        if newest:
            head += f" (sequence {newest['sequence']}, {newest['kind']} by {newest['issuer']})"
            if not info["verified"]:
                head += " UNVERIFIED: no control key configured, signature not checked"
        lines.append(head)
        if info["laggards"]:
            lines.append(f"  not yet applied by: {', '.join(info['laggards'])}")
    lines.append("")
    lines.append(f"{'REPLICA':<24} {'STATE':<9} {'LAST SEEN':>10}  APPLIED (model=sequence)")
    for replica in report["replicas"]:
        state = replica["state"] if replica["live"] else "gone"
        applied = " ".join(
            f"{m}={'-' if v is None else v}" for m, v in replica["config_versions"].items()
        )
        refused = f"  refused {replica['refused_count']}" if replica["refused_count"] else ""
        lines.append(
            f"{replica['replica_id']:<24} {state:<9} {replica['last_seen_ms_ago'] / 1000:>9.1f}s"
            f"  {applied}{refused}"
        )
    if not report["replicas"]:
        lines.append("(no replica has reported yet)")
    return "\n".join(lines) + "\n"


def _run_keygen(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(f"{args.key_id}:{secrets.token_hex(32)}\n")
    return ExitCode.OK


def _describe(config: ModelConfig) -> str:
    parts = [f"production {config.production_version}"]
    if config.canary_version:
        state = "" if config.canary_enabled else " (disabled)"
        parts.append(
            f"canary {config.canary_version} at {config.canary_basis_points / 100:g}%{state}"
        )
    if config.shadow_version:
        parts.append(f"shadow {config.shadow_version} {'on' if config.shadow_enabled else 'off'}")
    if config.kill_switch:
        parts.append(f"KILL SWITCH -> {config.fallback_version or config.production_version}")
    if config.flags:
        parts.append("flags " + ",".join(f"{k}={v}" for k, v in sorted(config.flags.items())))
    if config.injection is not None:
        parts.append(describe_injection(config.injection, time.time_ns() // 1_000_000))
    return ", ".join(parts)


def _command_json(command: ControlCommand) -> dict[str, Any]:
    fields = dataclasses.asdict(command)
    fields["kind"] = command.kind.value
    del fields["signature"]
    return fields


def _fail(
    args: argparse.Namespace,
    message: str,
    code: int,
    *,
    error: BaseException | None = None,
    settings: Settings | None = None,
) -> int:
    hint = None if error is None else unreachable_hint(error, settings)
    if getattr(args, "json", False):
        report: dict[str, Any] = {"error": message, "exit_code": code}
        if hint is not None:
            report["hint"] = hint
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stderr.write(f"safeloop: {message}\n")
        if hint is not None:
            sys.stderr.write(f"safeloop: {hint}\n")
    return code
