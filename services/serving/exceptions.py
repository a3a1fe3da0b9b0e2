"""Errors raised by `services.serving`; each maps to one HTTP status."""

from __future__ import annotations

from safeloop import SafeloopError


class ServingError(SafeloopError):
    """Root of every error raised by `services.serving`."""

    status_code = 500


class InvalidRequestError(ServingError):
    """The request body or its features are not what the model needs (HTTP 422)."""

    status_code = 422


class MalformedRequestError(InvalidRequestError):
    """The body is not JSON (HTTP 400)."""

    status_code = 400


class UnknownModelError(ServingError):
    """This replica does not serve the requested model (HTTP 404)."""

    status_code = 404

    def __init__(self, model_name: str, served: list[str]) -> None:
        super().__init__(f"model {model_name!r} is not served here; served: {', '.join(served)}")
        self.model_name = model_name


class NotReadyError(ServingError):
    """Control state is still being rebuilt from the control topic (HTTP 503)."""

    status_code = 503


class PredictionFailedError(ServingError):
    """The model raised while scoring (HTTP 500); the event carries the error too."""

    def __init__(self, model_name: str, version: str, prediction_id: str, cause: str) -> None:
        super().__init__(f"model {model_name} version {version} failed: {cause}")
        self.prediction_id = prediction_id


class InjectedFaultError(ServingError):
    """A rehearsal fault (`safeloop inject`) failed this request on purpose (HTTP 500)."""

    def __init__(self, prediction_id: str, delay_ms: float = 0.0) -> None:
        super().__init__("injected")
        self.prediction_id = prediction_id
        # The injected latency the HTTP layer still holds the answer back by.
        self.injected_delay_ms = delay_ms
