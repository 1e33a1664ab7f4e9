"""Domain errors with their failure class in the type; the API edge maps them to gRPC codes."""
from __future__ import annotations

from typing import Any


class VdcosError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(VdcosError):
    """Bad input. `details` is a list of (field, description)."""
    code = "INVALID_ARGUMENT"


class NotFound(VdcosError):
    code = "NOT_FOUND"


class AlreadyExists(VdcosError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(VdcosError):
    code = "FAILED_PRECONDITION"


class Unschedulable(VdcosError):
    """No node can take the VM. `details` is the core's Rejection; its `retryable` picks the
    code: RESOURCE_EXHAUSTED (could fit later) or FAILED_PRECONDITION (never)."""

    def __init__(self, rejection: Any) -> None:
        super().__init__(rejection.summary, details=rejection)
        self.code = "RESOURCE_EXHAUSTED" if rejection.retryable else "FAILED_PRECONDITION"


class ResourceExhausted(VdcosError):
    """Not now, maybe later: a limit or the capacity a specific request needs is used up."""
    code = "RESOURCE_EXHAUSTED"


class QuotaExceeded(ResourceExhausted):
    """A project's quota would be passed. `details` lists the model's QuotaViolations."""


class Aborted(VdcosError):
    """Optimistic-concurrency retries ran out; the client may retry."""
    code = "ABORTED"


class Unavailable(VdcosError):
    code = "UNAVAILABLE"
