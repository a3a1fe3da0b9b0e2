"""Users, ACLs and client files for the secured local broker, applied as its admin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from safeloop.infra.kafka.broker_security import (
    ADMIN_USER,
    SecurityPaths,
    client_file_text,
)
from safeloop.infra.kafka.certificates import TlsFiles, ensure_certificates
from safeloop.infra.kafka.clients import admin_client
from safeloop.infra.kafka.roles import Role, apply_grants, role_grants, upsert_users
from safeloop.infra.kafka.secret_files import ensure_password, write_private
from safeloop.infra.settings import Secret, Settings


def admin_settings(settings: Settings, paths: SecurityPaths) -> Settings:
    """`settings` acting as the local broker's admin (the super user that sets things up)."""
    return replace(
        settings,
        kafka_security="sasl_ssl",
        kafka_username=ADMIN_USER,
        kafka_password=ensure_password(paths.password_file(ADMIN_USER)),
        kafka_ca_file=paths.tls.ca_cert.resolve(),
    )


def role_settings(settings: Settings, paths: SecurityPaths, role: Role) -> Settings:
    """`settings` acting as `role`'s default user, as its client file says."""
    return replace(
        admin_settings(settings, paths),
        kafka_username=role.value,
        kafka_password=ensure_password(paths.password_file(role.value)),
    )


def provision_roles(settings: Settings, paths: SecurityPaths) -> None:
    """Create each role's user and ACLs (for `settings`' topic names) and its client file."""
    admin_view = admin_settings(settings, paths)
    passwords = {role.value: ensure_password(paths.password_file(role.value)) for role in Role}
    admin = admin_client(admin_view)
    upsert_users(admin, settings.kafka_sasl_mechanism, passwords)
    grant_roles(admin_view)
    write_private(
        paths.client_file(ADMIN_USER),
        client_file_text(settings, paths, ADMIN_USER, "the admin (super user: setup only)"),
    )
    for role in Role:
        write_private(
            paths.client_file(role.value),
            client_file_text(settings, paths, role.value, f"the {role.value} role"),
        )


def client_file_env(paths: SecurityPaths, name: str) -> dict[str, str]:
    """A child's environment entries that make it act as `name` (a role or the admin) and no
    one else: its client file, with any credentials inherited from the parent blanked."""
    return {
        "SAFELOOP_KAFKA_USERNAME": "",
        "SAFELOOP_KAFKA_PASSWORD": "",
        "SAFELOOP_KAFKA_PASSWORD_FILE": "",
        "SAFELOOP_KAFKA_CA_FILE": "",
        "SAFELOOP_KAFKA_CLIENT_FILE": str(paths.client_file(name).resolve()),
    }


def grant_roles(admin_view: Settings) -> None:
    """The role ACLs for `admin_view`'s topic names (another topic prefix needs its own)."""
    usernames = {role: role.value for role in Role}
    apply_grants(admin_client(admin_view), role_grants(admin_view), usernames)


def add_user(admin_view: Settings, role: Role, username: str, password: Secret) -> int:
    """Create (or reset) `username` with `role`'s ACLs on `admin_view`'s topic names."""
    admin = admin_client(admin_view)
    upsert_users(admin, admin_view.kafka_sasl_mechanism, {username: password})
    grants = [grant for grant in role_grants(admin_view) if grant.role is role]
    apply_grants(admin, grants, {role: username})
    return len(grants)


def local_admin_view(settings: Settings) -> Settings:
    """On the secured local broker, a command without credentials acts as its admin (whoever
    can read the state directory holds the admin password anyway); otherwise `settings`."""
    if settings.uses_local_kafka and settings.kafka_secured and not settings.kafka_username:
        return admin_settings(settings, SecurityPaths(settings.state_dir.resolve() / "kafka"))
    return settings


def write_cluster_secrets(out: Path, hosts: Sequence[str]) -> list[Path]:
    """A CA, one certificate for every broker host, and a password per user, for a cluster run
    elsewhere (docker-compose): `<out>/ca.pem`, `broker.pem`, `<user>.password`; all 0600."""
    tls = TlsFiles(out)
    ensure_certificates(tls, list(hosts))
    passwords = [out / f"{name}.password" for name in (ADMIN_USER, *(r.value for r in Role))]
    for path in passwords:
        ensure_password(path)
    return [tls.ca_cert, tls.broker_keystore, *passwords]
