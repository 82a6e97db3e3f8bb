"""The one exception tree of shipmate, and the single place that maps it to exit codes.

    ShipmateError
    ├── UserError                 the person can fix it; exit code 2
    │   ├── SpecError             a shipmate.yaml (or file it names) is wrong: carries file:line:col
    │   ├── UsageError            a command line is wrong
    │   ├── NotFound
    │   ├── Conflict
    │   └── Forbidden
    ├── CheckFailed               a check ran and said no (render --check, validate of a policy); exit 1
    ├── ExternalError             a tool or service we call failed; raised `from` its own exception
    ├── TemporaryError(delay)     a controller may retry after `delay` seconds
    ├── PermanentError            a controller must not retry
    └── InternalError             a bug in shipmate

Callers: every package raises these; only `shipmate.cli.main` turns them into exit codes
(`exit_code`), and only the server will turn them into HTTP statuses.
This module must not import anything from shipmate.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShipmateError(Exception):
    """Base of every error shipmate raises on purpose."""


class UserError(ShipmateError):
    """Bad input: the message says where and what to do."""


@dataclass(frozen=True)
class Location:
    """Where in a file a problem is: 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(UserError):
    """A problem in a spec file, with its location and key path.

    str(err) is one line: `file:line:col: key.path: message`.
    """

    def __init__(self, message: str, *, location: Location | None = None, path: str = "") -> None:
        self.message = message
        self.location = location
        self.path = path
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class UsageError(UserError):
    """A command line that cannot be carried out as given."""


class NotFound(UserError):
    """Something named does not exist."""


class Conflict(UserError):
    """The request clashes with the current state (a lock is held, a name is taken)."""


class Forbidden(UserError):
    """The caller may not do this."""


class CheckFailed(ShipmateError):
    """A check ran to the end and its answer is no."""


class ExternalError(ShipmateError):
    """A tool or service that shipmate calls failed; raised `from` the original exception."""


class TemporaryError(ShipmateError):
    """A failure that may pass; retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ShipmateError):
    """A failure that will not pass by retrying."""


class InternalError(ShipmateError):
    """A bug in shipmate."""


def exit_code(error: BaseException) -> int:
    """The process exit code for an error: 2 bad input, 1 a failed check, 3 anything else."""
    if isinstance(error, UserError):
        return 2
    if isinstance(error, CheckFailed):
        return 1
    return 3


def truncate(text: str, limit: int = 256) -> str:
    """Cut a payload from an external system before it is logged or shown."""
    return text if len(text) <= limit else text[:limit] + "…"
