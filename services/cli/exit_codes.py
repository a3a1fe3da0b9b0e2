"""How a `safeloop` command ends: exit codes, and the one place that maps errors to them."""

from __future__ import annotations

import logging
import sys
from enum import IntEnum

from safeloop import SafeloopError
from safeloop.infra.exceptions import SettingsError
from safeloop.infra.settings import Settings
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.unreachable_hint import unreachable_hint
from safeloop.services.control.exceptions import WaitTimeoutError
from safeloop.services.dashboard.exceptions import DashboardBindError
from safeloop.services.guard.exceptions import PolicyError
from safeloop.services.publishing.exceptions import (
    CheckpointError,
    IngestBindError,
    InputFileError,
)
from safeloop.services.retraining.exceptions import RetrainingPolicyError, TrainerLoadError
from safeloop.services.rollout.exceptions import PlanError
from safeloop.streams.exceptions import WindowConfigError

log = logging.getLogger("safeloop.cli")


class ExitCode(IntEnum):
    """What scripts can rely on; README "Operating it" lists them."""

    OK = 0
    FAILURE = 1  # the message says what to do
    USAGE = 2  # arguments or settings that make no sense
    TIMEOUT = 3  # `--wait` ran out; the laggards are named
    SUPERSEDED = 4  # lost its sequence to a rival publisher, or `--wait`: a newer command won
    REFUSED = 5  # `--wait`: a replica refused the command (its refusal text is shown)
    INTERRUPTED = 130  # Ctrl-C


# Errors that mean "you asked for something that cannot be": fix the command or the settings.
_USAGE_ERRORS: tuple[type[SafeloopError], ...] = (
    UsageError,
    SettingsError,
    PlanError,
    PolicyError,
    RetrainingPolicyError,
    TrainerLoadError,
    WindowConfigError,
    DashboardBindError,
    InputFileError,
    CheckpointError,
    IngestBindError,
)


def exit_code_for(error: SafeloopError) -> ExitCode:
    """The exit code of a command that failed with `error`."""
    if isinstance(error, WaitTimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(error, _USAGE_ERRORS):
        return ExitCode.USAGE
    return ExitCode.FAILURE


def report_failure(
    error: SafeloopError, *, debug: bool, settings: Settings | None = None
) -> ExitCode:
    """Say what failed on stderr (the traceback only when debugging) and return its exit code;
    a server that did not answer at all gets a second line saying how to start it."""
    sys.stderr.write(f"safeloop: {error}\n")
    hint = unreachable_hint(error, settings)
    if hint is not None:
        sys.stderr.write(f"safeloop: {hint}\n")
    if debug:
        log.error("%s", type(error).__name__, exc_info=error)
    return exit_code_for(error)
