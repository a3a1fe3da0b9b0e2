"""The local broker secured: SASL_SSL (SCRAM) for clients, mutual TLS for its controller, ACLs.

The admin (the only super user besides the broker's own certificate) is bootstrapped into the
metadata log at format time; the role users and their ACLs are created once the broker answers.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from safeloop.infra.kafka.certificates import BROKER_COMMON_NAME, TlsFiles, ensure_certificates
from safeloop.infra.kafka.secret_files import ensure_password
from safeloop.infra.settings import Secret, Settings

ADMIN_USER = "admin"
SCRAM_ITERATIONS = 8192
_STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


@dataclass(frozen=True)
class SecurityPaths:
    """Secrets and key material under `<state_dir>/kafka/` (files readable by the owner only)."""

    root: Path

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.root / "tls")

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def clients(self) -> Path:
        """One `<role>.env` client file per role, for SAFELOOP_KAFKA_CLIENT_FILE."""
        return self.root / "clients"

    def password_file(self, username: str) -> Path:
        return self.secrets / f"{username}.password"

    def client_file(self, name: str) -> Path:
        return self.clients / f"{name}.env"

    @property
    def format_mode(self) -> Path:
        """Which security the storage was formatted for (SCRAM users exist only if sasl_ssl)."""
        return self.root / "data" / "safeloop-security"


@dataclass(frozen=True)
class BrokerSecurity:
    """What the broker's secured configuration refers to."""

    admin_password: Secret
    tls: TlsFiles


def prepare_broker_security(paths: SecurityPaths, settings: Settings) -> BrokerSecurity:
    """The admin password and TLS files, made on first use and reused afterwards."""
    hosts = [settings.kafka_host, "127.0.0.1", "localhost"]
    ensure_certificates(paths.tls, hosts)
    return BrokerSecurity(ensure_password(paths.password_file(ADMIN_USER)), paths.tls)


def secured_properties(
    settings: Settings, security: BrokerSecurity, node_id: int = 1, controller: bool = True
) -> dict[str, str]:
    """server.properties entries that replace node `node_id`'s plaintext listeners with secured
    ones; `controller`: the node is a KRaft voter and listens for its quorum too."""
    host = settings.kafka_host
    mechanism = settings.kafka_sasl_mechanism
    password = security.admin_password.value.replace("\\", "\\\\").replace('"', '\\"')
    port = settings.kafka_node_port(node_id)
    listeners = f"SASL_SSL://{host}:{port}"
    if controller:
        listeners += f",CONTROLLER://{host}:{settings.kafka_node_controller_port(node_id)}"
    return {
        "listeners": listeners,
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        # SCRAM cannot authenticate a KRaft controller listener: the broker proves itself to
        # its controller with its certificate instead (mutual TLS, principal safeloop-broker).
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": (
            f'{_SCRAM_LOGIN} required username="{ADMIN_USER}" password="{password}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.tls.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.tls.ca_cert),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": _STANDARD_AUTHORIZER,
        "super.users": f"User:{ADMIN_USER};User:{BROKER_COMMON_NAME}",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_format_argument(mechanism: str, username: str, password: Secret) -> str:
    """`kafka-storage format --add-scram` value with a salted password (never the password)."""
    salt = secrets.token_bytes(16)
    digest = "sha512" if mechanism.endswith("512") else "sha256"
    salted = hashlib.pbkdf2_hmac(digest, password.value.encode(), salt, SCRAM_ITERATIONS)
    return (
        f"{mechanism}=[name={username},iterations={SCRAM_ITERATIONS},"
        f'salt="{base64.b64encode(salt).decode()}",'
        f'saltedpassword="{base64.b64encode(salted).decode()}"]'
    )


def client_file_text(settings: Settings, paths: SecurityPaths, username: str, what: str) -> str:
    """A client file: the settings that make a safeloop process connect as `username`."""
    return "\n".join(
        [
            f"# Kafka client settings for {what} (principal User:{username}), written by",
            "# `safeloop kafka start`. Point SAFELOOP_KAFKA_CLIENT_FILE at it, or source it.",
            "SAFELOOP_KAFKA_SECURITY=sasl_ssl",
            f"SAFELOOP_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}",
            f"SAFELOOP_KAFKA_USERNAME={username}",
            f"SAFELOOP_KAFKA_PASSWORD_FILE={paths.password_file(username).resolve()}",
            f"SAFELOOP_KAFKA_CA_FILE={paths.tls.ca_cert.resolve()}",
            "",
        ]
    )
