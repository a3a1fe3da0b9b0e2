"""The Kafka broker jars, fetched once from Maven Central into the cache directory by Maven."""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import subprocess
from pathlib import Path

from safeloop.infra.exceptions import JarFetchError, SettingsError, ToolMissingError
from safeloop.infra.settings import Settings

log = logging.getLogger(__name__)

POM_PATH = Path(__file__).with_name("pom.xml")
_COMPLETE_MARKER = ".complete"
_RELEASE = re.compile(r"\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)?")
_MAVEN_TIMEOUT_S = 900.0
_OUTPUT_LINES_QUOTED = 25
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Maven's closing advice ("re-run with -e", "[Help 1]") is noise next to the actual error.
_MAVEN_BOILERPLATE = re.compile(r"^\[ERROR\]\s*($|To see|Re-run|For more|\[Help)")


def require_tool(name: str) -> str:
    """The absolute path of `name` on PATH, or `ToolMissingError` saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(
            f"{name} is not on PATH; the local Kafka broker needs Java 17+ and Maven. "
            "Install them with: apt-get install openjdk-17-jre-headless maven"
        )
    return found


def kafka_home(settings: Settings) -> Path:
    """`<cache_dir>/kafka-<version>`: one directory per Kafka release."""
    version = settings.kafka_version
    # The version becomes a path and a Maven property: accept release numbers only.
    if not _RELEASE.fullmatch(version):
        raise SettingsError("SAFELOOP_KAFKA_VERSION", version, "a Kafka release such as 4.4.0")
    return settings.cache_dir.resolve() / f"kafka-{version}"


def libs_dir(settings: Settings) -> Path:
    """The directory whose jars form the broker's class path."""
    return kafka_home(settings) / "libs"


def jars_present(settings: Settings) -> bool:
    """True when a previous fetch of this version completed."""
    return (libs_dir(settings) / _COMPLETE_MARKER).is_file()


def fetch_kafka_jars(settings: Settings) -> Path:
    """Copy `kafka_2.13:<version>` and its runtime dependencies into `libs_dir`; idempotent."""
    libs = libs_dir(settings)
    if jars_present(settings):
        return libs
    require_tool("java")
    mvn = require_tool("mvn")
    home = libs.parent
    home.mkdir(parents=True, exist_ok=True)
    # Two processes (CLI and a test session, say) may fetch at once: serialise per version.
    with (home / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_present(settings):
            return libs
        _run_maven(mvn, settings.kafka_version, home / "libs.partial")
        shutil.rmtree(libs, ignore_errors=True)
        (home / "libs.partial").rename(libs)
        (libs / _COMPLETE_MARKER).write_text(settings.kafka_version + "\n")
    log.info("Kafka %s jars are in %s", settings.kafka_version, libs)
    return libs


def _run_maven(mvn: str, version: str, output_dir: Path) -> None:
    """Run `dependency:copy-dependencies` into a staging directory, renamed only on success."""
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(POM_PATH),
        # Fully qualified, so an unreachable Central is reported as such, not as "no plugin".
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={output_dir}",
    ]
    log.info("fetching Kafka %s jars: %s", version, " ".join(command))
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise JarFetchError(
            f"Maven did not finish fetching Kafka {version} within {_MAVEN_TIMEOUT_S:.0f}s"
        ) from exc
    broker_jar = output_dir / f"kafka_2.13-{version}.jar"
    if result.returncode != 0 or not broker_jar.is_file():
        output = [
            line
            for line in _ANSI_ESCAPE.sub("", result.stdout + result.stderr).strip().splitlines()
            if not _MAVEN_BOILERPLATE.match(line)
        ]
        quoted = "\n".join(output[-_OUTPUT_LINES_QUOTED:]) or "(no output)"
        raise JarFetchError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} from Maven Central "
            f"(is the network up and {version} a released version?). mvn said:\n{quoted}"
        )
