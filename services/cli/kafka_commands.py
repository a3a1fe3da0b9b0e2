"""`safeloop kafka start|stop|status` and `safeloop topics create|list`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safeloop.infra.settings import Secret, Settings
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from safeloop.infra.kafka.broker import BrokerStatus, NodeStatus

# infra.kafka.roles' Role values (tests/unit/test_cli_imports.py checks them), spelled out so
# that building the parser does not import confluent-kafka.
ROLES = ("operator", "replica", "labels", "processor", "metrics")


# A listing only reads metadata: an operator waiting on a broker that is down learns it sooner
# than after the 30 s that creating topics (and waiting for their leaders) may take.
LIST_TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser("kafka", help="run the local Apache Kafka broker")
    kafka_commands = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("start", _start, "fetch the jars if needed, start the broker and wait until it answers"),
        (
            "stop",
            _stop,
            "stop the broker cleanly (SIGTERM, then SIGKILL after a timeout); "
            "exit 0 also when it was not running",
        ),
        ("status", _status, "is the broker running (or, with KAFKA_BOOTSTRAP_SERVERS, reachable)"),
    ):
        parser = kafka_commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
        parser.set_defaults(func=func)
        if name == "start":
            parser.add_argument(
                "--brokers",
                type=_node_count,
                default=None,
                metavar="N",
                help="KRaft nodes on this host (default: as formatted before, else 1); topics "
                "get replication factor min(3, N) and min ISR RF-1; nodes listen on "
                "SAFELOOP_KAFKA_PORT + 2(k-1)",
            )
    grant = kafka_commands.add_parser(
        "grant",
        help="create a Kafka user with a role's ACLs (e.g. a label pipeline's credentials)",
        description="Create (or reset) a SCRAM user and give it exactly the ACLs of ROLE on "
        "this deployment's topic names. Runs as the admin: on the secured local broker "
        "automatically; elsewhere with the admin's SAFELOOP_KAFKA_USERNAME/PASSWORD(_FILE).",
    )
    grant.add_argument("role", choices=ROLES, help="the user's role")
    grant.add_argument("--user", help="user name (default: the role's name)")
    grant.add_argument(
        "--password-file",
        type=Path,
        help="the user's password (first line); default on the local broker: a new random one "
        "in <state>/kafka/secrets/<user>.password, with a client file beside the others",
    )
    grant.set_defaults(func=_grant)
    pki = kafka_commands.add_parser(
        "pki",
        help="make a CA, broker certificate and passwords for a cluster run elsewhere (compose)",
        description="Write <out>/ca.pem, <out>/broker.pem (key + chain, names every --hosts "
        "entry) and <out>/<user>.password for the admin and each role, readable by their "
        "owner only; existing files are kept. docker-compose.yml reads them from ./kafka-secrets.",
    )
    pki.add_argument("--out", type=Path, default=Path("kafka-secrets"), help="directory")
    pki.add_argument(
        "--hosts", default="kafka-1,kafka-2,kafka-3", help="broker host names, comma-separated"
    )
    pki.set_defaults(func=_pki)

    topics = subparsers.add_parser("topics", help="create and list safeloop's Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topic_commands.add_parser(
        "create", help="create the missing topics (idempotent); checks partition counts"
    )
    create.set_defaults(func=_create_topics)
    listing = topic_commands.add_parser("list", help="list topics with partitions and policy")
    listing.add_argument("--all", action="store_true", help="include internal topics")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--timeout-s",
        type=float,
        default=LIST_TIMEOUT_S,
        help=f"give up on an unreachable broker after this long (default {LIST_TIMEOUT_S:.0f})",
    )
    listing.set_defaults(func=_list_topics)


def _progress(message: str) -> None:
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def _start(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.broker import LocalKafkaBroker

    if args.brokers is not None:
        settings = settings.with_kafka_brokers(args.brokers)
    status = LocalKafkaBroker(settings).start(progress=None if args.json else _progress)
    _write_status(status, settings, args.json)
    return ExitCode.OK if status.running else ExitCode.FAILURE


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    """Idempotent, like `warehouse stop`: stopping a broker that is not running succeeds (exit 0)
    and says so in words that do not read like a failure."""
    from safeloop.infra.kafka.broker import LocalKafkaBroker

    broker = LocalKafkaBroker(settings)
    was_running = broker.status().running
    status = broker.stop()
    if args.json:
        sys.stdout.write(json.dumps({**status.as_dict(), "was_running": was_running}, indent=2))
        sys.stdout.write("\n")
    elif status.running:
        sys.stderr.write(f"safeloop: Kafka is still running (pid {status.pid})\n")
    elif was_running:
        sys.stdout.write(f"Kafka stopped (data kept in {status.data_dir})\n")
    else:
        sys.stdout.write(f"Kafka was not running; nothing to stop (data in {status.data_dir})\n")
    return ExitCode.FAILURE if status.running else ExitCode.OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.broker import LocalKafkaBroker

    status = LocalKafkaBroker(settings).status()
    _write_status(status, settings, args.json)
    return ExitCode.OK if status.running else ExitCode.FAILURE


def _write_status(status: BrokerStatus, settings: Settings, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(status.as_dict(), indent=2) + "\n")
        return
    if not settings.uses_local_kafka:
        state = "reachable" if status.running else "NOT reachable"
        sys.stdout.write(f"external Kafka cluster at {status.bootstrap} is {state}\n")
    elif len(status.nodes) > 1:
        state = "running" if status.running else "NOT fully running"
        sys.stdout.write(
            f"Kafka {status.version} {state} on {status.bootstrap} "
            f"({len(status.nodes)} nodes, {status.security}, node 1 data in {status.data_dir})\n"
        )
        for node in status.nodes:
            sys.stdout.write(f"  {_node_line(node)}\n")
        if status.offline_partitions:
            sys.stdout.write(f"  {status.offline_partitions} partition(s) have no leader\n")
    elif status.running:
        sys.stdout.write(
            f"Kafka {status.version} running on {status.bootstrap} "
            f"(pid {status.pid}, {status.security}, data in {status.data_dir})\n"
        )
    else:
        sys.stdout.write(f"Kafka is not running (data in {status.data_dir})\n")


def _node_line(node: NodeStatus) -> str:
    where = f"node {node.node_id} ({node.roles}) :{node.port}"
    if not node.running:
        return f"{where} DOWN"
    if node.partitions_led is None:
        return f"{where} pid {node.pid}, cluster not answering"
    return (
        f"{where} pid {node.pid}, leads {node.partitions_led} partition(s), "
        f"{node.under_replicated} under-replicated"
    )


def _node_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of brokers") from exc
    if count < 1:
        raise argparse.ArgumentTypeError("at least one broker")
    return count


def _grant(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.broker_security import SecurityPaths, client_file_text
    from safeloop.infra.kafka.provisioning import add_user, local_admin_view
    from safeloop.infra.kafka.roles import Role
    from safeloop.infra.kafka.secret_files import ensure_password, write_private

    role = Role(args.role)
    user = args.user or role.value
    admin_view = local_admin_view(settings)
    if not admin_view.kafka_secured:
        raise UsageError("users and ACLs need a secured Kafka (SAFELOOP_KAFKA_SECURITY=sasl_ssl)")
    paths = SecurityPaths(settings.state_dir.resolve() / "kafka")
    if args.password_file is not None:
        lines = args.password_file.read_text().splitlines()
        password = Secret(lines[0].strip() if lines else "")
        if not password:
            raise UsageError(f"{args.password_file} holds no password")
    elif settings.uses_local_kafka:
        password = ensure_password(paths.password_file(user))
    else:
        raise UsageError("--password-file is required for a cluster other than the local broker")
    count = add_user(admin_view, role, user, password)
    sys.stdout.write(f"User:{user} has the {role.value} role's {count} ACLs\n")
    if settings.uses_local_kafka and args.password_file is None:
        client_file = paths.client_file(user)
        write_private(client_file, client_file_text(settings, paths, user, f"{user} ({role})"))
        sys.stdout.write(f"client settings: SAFELOOP_KAFKA_CLIENT_FILE={client_file}\n")
    return ExitCode.OK


def _pki(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.provisioning import write_cluster_secrets

    hosts = [host.strip() for host in args.hosts.split(",") if host.strip()]
    if not hosts:
        raise UsageError("--hosts names no host")
    for path in write_cluster_secrets(args.out, hosts):
        sys.stdout.write(f"{path}\n")
    return ExitCode.OK


def _create_topics(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.provisioning import local_admin_view
    from safeloop.infra.kafka.topics import TopicAdmin, topic_specs

    settings = local_admin_view(settings)
    specs = topic_specs(settings)
    created = set(TopicAdmin.from_settings(settings).ensure(specs))
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        sys.stdout.write(
            f"{state:8} {spec.name} ({_partitions(spec.partitions)}, "
            f"{spec.config.get('cleanup.policy', 'delete')})\n"
        )
    return ExitCode.OK


def _list_topics(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.kafka.provisioning import local_admin_view
    from safeloop.infra.kafka.topics import TopicAdmin

    admin = TopicAdmin.from_settings(local_admin_view(settings), timeout=args.timeout_s)
    descriptions = admin.describe(admin.topic_names(include_internal=args.all))
    if args.json:
        rows = [
            {
                "name": d.name,
                "partitions": d.partitions,
                "replication_factor": d.replication_factor,
                "config": dict(d.config),
            }
            for d in descriptions.values()
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return ExitCode.OK
    for d in descriptions.values():
        sys.stdout.write(
            f"{d.name:40} {_partitions(d.partitions):>14}  rf {d.replication_factor}  "
            f"{d.config.get('cleanup.policy', '')}\n"
        )
    return ExitCode.OK


def _partitions(count: int) -> str:
    return f"{count} partition" + ("" if count == 1 else "s")
