"""Roles as Kafka principals: the ACL table (what each role may touch) and how it is applied."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.admin._scram import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from safeloop.infra.kafka.admin_retry import until_done
from safeloop.infra.kafka.broker_security import SCRAM_ITERATIONS
from safeloop.infra.settings import Secret, Settings

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
# streams/app.py's default app id (consumer group, and the prefix of its changelog and
# repartition topics); tests/unit/test_kafka_roles.py checks the two agree.
PROCESSOR_APP_SUFFIX = "safeloop-streams"


class Role(StrEnum):
    """Who talks to Kafka; each role's default user has the role's name."""

    OPERATOR = "operator"
    REPLICA = "replica"
    LABELS = "labels"
    PROCESSOR = "processor"
    METRICS = "metrics"


class Access(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    # Create, describe, read, write (and delete) the topics or groups named by the grant.
    ALL = "ALL"


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"


@dataclass(frozen=True)
class Grant:
    """One ACL: `role` may `access` the `resource` named `name` (or every name it prefixes)."""

    role: Role
    access: Access
    resource: Resource
    name: str
    prefixed: bool = False

    def describe(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"{self.role}: {self.access} {self.resource} {pattern}"


def role_grants(settings: Settings) -> list[Grant]:
    """Every ACL the roles get; anything not listed is refused (allow.everyone=false)."""
    t = settings.topics
    app_id = f"{settings.topic_prefix}{PROCESSOR_APP_SUFFIX}"
    r, w = Access.READ, Access.WRITE
    topic, group = Resource.TOPIC, Resource.GROUP
    op, rep, lab, proc, met = Role.OPERATOR, Role.REPLICA, Role.LABELS, Role.PROCESSOR, Role.METRICS
    return [
        # Operators: sign and publish commands; watch what replicas applied.
        Grant(op, w, topic, t.control),
        Grant(op, r, topic, t.control),
        Grant(op, r, topic, t.replica_status),
        Grant(op, r, group, "safeloop-cli", prefixed=True),
        # Serving replicas: follow the control topic, publish predictions and their status.
        Grant(rep, r, topic, t.control),
        Grant(rep, w, topic, t.predictions),
        Grant(rep, w, topic, t.replica_status),
        Grant(rep, r, group, "safeloop-replica-", prefixed=True),
        # Label pipelines: outcomes, nothing else.
        Grant(lab, w, topic, t.outcomes),
        # The processor: its inputs, its outputs, its own group, changelogs and repartitions.
        Grant(proc, r, topic, t.predictions),
        Grant(proc, r, topic, t.outcomes),
        Grant(proc, w, topic, t.feedback),
        Grant(proc, w, topic, t.dead_letter),
        # Misrouted records take one hop through the join's repartition topic (streams/routing).
        Grant(proc, r, topic, t.repartition),
        Grant(proc, w, topic, t.repartition),
        Grant(proc, Access.ALL, topic, f"{app_id}-", prefixed=True),
        Grant(proc, r, group, app_id, prefixed=True),
        # The metrics service (and guard): what it consumes; retraining, control, dead letters.
        Grant(met, r, topic, t.predictions),
        Grant(met, r, topic, t.feedback),
        Grant(met, r, topic, t.control),
        Grant(met, w, topic, t.control),
        Grant(met, w, topic, t.retraining),
        # ... and the retraining loop (`safeloop retrain run`, the metrics role) reads it back.
        Grant(met, r, topic, t.retraining),
        Grant(met, w, topic, t.dead_letter),
        # Instances sharing the partitions exchange their guard summaries.
        Grant(met, r, topic, t.metrics_summaries),
        Grant(met, w, topic, t.metrics_summaries),
        Grant(met, r, group, "safeloop-metrics", prefixed=True),
    ]


def acl_bindings(grants: list[Grant], usernames: dict[Role, str]) -> list[AclBinding]:
    """confluent-kafka ACL bindings for `grants`, each role acting as its user."""
    return [
        AclBinding(
            ResourceType.TOPIC if grant.resource is Resource.TOPIC else ResourceType.GROUP,
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            f"User:{usernames[grant.role]}",
            "*",
            AclOperation[grant.access.value],
            AclPermissionType.ALLOW,
        )
        for grant in grants
    ]


def upsert_users(admin: AdminClient, mechanism: str, passwords: dict[str, Secret]) -> None:
    """Create (or reset) SCRAM users with the given passwords."""
    scram = (
        ScramMechanism.SCRAM_SHA_512 if mechanism.endswith("512") else ScramMechanism.SCRAM_SHA_256
    )
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(scram, SCRAM_ITERATIONS), password.value.encode()
        )
        for user, password in passwords.items()
    ]
    by_user = {upsert.user: upsert for upsert in upserts}
    until_done(
        lambda users: admin.alter_user_scram_credentials(
            [by_user[user] for user in users], request_timeout=_TIMEOUT_S
        ),
        list(by_user),
        lambda user: f"creating Kafka user {user}",
    )
    log.info("Kafka users ready: %s", ", ".join(sorted(passwords)))


def apply_grants(admin: AdminClient, grants: list[Grant], usernames: dict[Role, str]) -> None:
    """Create the ACLs (creating one that exists is a no-op)."""
    until_done(
        lambda bindings: admin.create_acls(bindings, request_timeout=_TIMEOUT_S),
        acl_bindings(grants, usernames),
        lambda binding: f"creating ACL {binding}",
    )
    log.info("Kafka ACLs ready: %d grants for %d roles", len(grants), len(usernames))
