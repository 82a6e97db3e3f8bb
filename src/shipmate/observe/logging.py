"""Log set-up for the CLI and, later, the server: one line per event on stderr, plain or JSON.

Called once by the CLI entry point. Messages never carry secret values: callers pass secrets as
values of a masked type, whose text is masked.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

_FORMAT_ENV = "SHIPMATE_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, and extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id", "environment", "release", "service"):
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(data, sort_keys=True)


def configure(verbosity: int) -> None:
    """Warnings by default, info with -v, debug with -vv; JSON when SHIPMATE_LOG_FORMAT=json."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    if os.environ.get(_FORMAT_ENV, "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("shipmate")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
