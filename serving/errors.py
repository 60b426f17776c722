"""Errors the deployments raise on purpose; the ingress turns each into an OpenAI-style JSON error.

Each carries only its message in `args`, so it survives pickling across Ray processes.
"""

from __future__ import annotations


class ServingError(Exception):
    status_code = 400
    code = "invalid_request"
    kind = "invalid_input"  # the `kind` label of setu_ml_errors

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidRequest(ServingError):
    pass


class ModelNotFound(ServingError):
    status_code = 404
    code = "model_not_found"


class UnknownLanguage(ServingError):
    code = "unknown_language"


class TooLarge(ServingError):
    status_code = 413
    code = "too_large"


class ModelUnavailable(ServingError):
    """The configured model could not be loaded; the message says why."""

    status_code = 503
    code = "model_unavailable"
    kind = "model_unavailable"


class Overloaded(ServingError):
    status_code = 503
    code = "overloaded"
    kind = "overloaded"


class InvalidModelOutput(ServingError):
    """The model did not produce what was asked (e.g. JSON matching a schema) within its attempts."""

    status_code = 502
    code = "invalid_model_output"
    kind = "invalid_output"


def unwrap(error: BaseException) -> BaseException:
    """The user exception inside a Ray `RayTaskError`, or the error itself."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def describe_error(error: BaseException) -> str:
    """`Type: first line of the message`, short enough for a status report."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:400]
