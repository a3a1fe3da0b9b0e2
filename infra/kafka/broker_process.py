"""The broker's JVM process: how it is launched, recognised, signalled and cleaned up after."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from safeloop.infra.daemon_process import is_alive
from safeloop.infra.exceptions import StartupError
from safeloop.infra.kafka.broker_config import BrokerPaths

# Small-machine JVM: a fixed heap, G1 with short pauses (Kafka's own defaults), no AWT, and
# exit on OOM so a dead broker never lingers as a half-working process. The heap is sized and
# touched at start (Xms = Xmx, as Kafka's operators run it): memory is taken once, not grown
# for an hour, so a broker's resident size says nothing about a leak elsewhere (bench/soak.py).
JVM_FLAGS: tuple[str, ...] = (
    "-Xms512m",
    "-Xmx512m",
    "-XX:+AlwaysPreTouch",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_MAIN_CLASS = "kafka.Kafka"
_HOME_PROPERTY = "-Dsafeloop.kafka.home="
_VERSION_PROPERTY = "-Dsafeloop.kafka.version="
# Detach: sh starts java in the background and exits at once, so the broker is not our child
# and outlives the CLI; start_new_session keeps terminal signals (Ctrl-C) away from it.
_DETACH_SCRIPT = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
_HAS_PROC = Path("/proc/self").is_dir()


def java_command(java: str, libs: Path, paths: BrokerPaths, *args: str) -> list[str]:
    """A java command line on the Kafka jars, logging as the generated log4j2 config says."""
    return [
        java,
        f"-Dlog4j2.configurationFile={paths.log4j_config}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        str(libs / "*"),
        *args,
    ]


def broker_command(java: str, libs: Path, paths: BrokerPaths, version: str) -> list[str]:
    """The broker's command line, marked with its state dir and version for `owned_pid`."""
    return java_command(
        java,
        libs,
        paths,
        *JVM_FLAGS,
        f"{_HOME_PROPERTY}{paths.node_root}",
        f"{_VERSION_PROPERTY}{version}",
        _MAIN_CLASS,
        str(paths.server_properties),
    )


def spawn_detached(command: list[str], output: Path) -> int:
    """Start `command` detached from us, its output appended to `output`; return its pid."""
    launcher = ["/bin/sh", "-c", _DETACH_SCRIPT, "sh", str(output), *command]
    result = subprocess.run(
        launcher,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        start_new_session=True,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise StartupError(f"could not launch java: {result.stderr.strip() or result.stdout}")
    return int(result.stdout.strip())


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def owned_pid(paths: BrokerPaths) -> int | None:
    """The pid in the pid file if that process is our broker for this state dir."""
    pid = read_pid(paths.pid_file)
    if pid is None or not is_alive(pid):
        return None
    argv = cmdline(pid)
    # Without /proc (not Linux) a live pid is the best evidence there is.
    if argv is None:
        return pid
    ours = _MAIN_CLASS in argv and f"{_HOME_PROPERTY}{paths.node_root}" in argv
    return pid if ours else None


def stale_pid_reason(paths: BrokerPaths) -> str | None:
    """Why the pid file is stale (left by a crash, or its pid reused), or None if it is not."""
    if not paths.pid_file.exists() or owned_pid(paths) is not None:
        return None
    pid = read_pid(paths.pid_file)
    if pid is None:
        return "no pid in it"
    if is_alive(pid):
        return f"pid {pid} now belongs to another program"
    return f"process {pid} is gone"


def clear_stale_lock(paths: BrokerPaths) -> bool:
    """Remove a `.lock` left by a killed broker; refuse if a live process still holds it."""
    data_lock = paths.data_lock
    if not data_lock.exists():
        return False
    with data_lock.open("a") as handle:
        # Kafka holds this file with a POSIX lock (FileChannel.tryLock), as lockf does.
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise StartupError(
                f"{paths.data} is locked by another running Kafka process not recorded "
                f"in {paths.pid_file}; stop that process first"
            ) from exc
        fcntl.lockf(handle, fcntl.LOCK_UN)
    data_lock.unlink()
    return True


def cmdline(pid: int) -> list[str] | None:
    """The process's argv ([] once it is gone), or None where there is no /proc."""
    if not _HAS_PROC:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def running_version(pid: int) -> str | None:
    """The Kafka version the broker `pid` was launched with, as `broker_command` marked it."""
    for arg in cmdline(pid) or []:
        if arg.startswith(_VERSION_PROPERTY):
            return arg.removeprefix(_VERSION_PROPERTY)
    return None
