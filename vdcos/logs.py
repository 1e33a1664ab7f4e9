"""Every daemon's log: plain lines, or JSON lines (`--log-json`, or VDCOS_LOG_JSON=1 in its
environment: `vdcos up --log-json` sets it for every process it starts), one object a line
with `ts`, `level`, `logger`, `msg` and, while a call is being served, its `request_id`.

The request id follows a call from the API to what it causes: the API takes the caller's
`x-request-id` metadata (or makes one) for the whole call; it is written into the records the
call commits (a VM's assignment and ports, a migration), and the agent reconciling that VM,
the switch plugging its ports and the agent carrying out its migration log under it again.
`grep` one id across the daemons' logs and the call's story is in order."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sys
import time
from contextvars import ContextVar
from typing import Iterator

REQUEST_ID: ContextVar[str] = ContextVar("vdcos_request_id", default="")
METADATA_KEY = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ENV = "VDCOS_LOG_JSON"


def new_id() -> str:
    return f"req-{secrets.token_hex(8)}"


def valid(rid: str) -> bool:
    return bool(_VALID.fullmatch(rid))


@contextlib.contextmanager
def request(rid: str) -> Iterator[None]:
    """Log under `rid` (if any) until the block ends, in this thread or task."""
    if not rid:
        yield
        return
    token = REQUEST_ID.set(rid)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class _WithRequest(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonLines(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "process": self.process, "logger": record.name,
               "msg": record.getMessage()}
        rid = getattr(record, "request_id", "")
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", "")
        return f"{line} [{rid}]" if rid else line


def setup(process: str, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger of a daemon named `process` (once, at its start)."""
    if json_lines is None:
        json_lines = os.environ.get(ENV, "") not in ("", "0")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_WithRequest())
    handler.setFormatter(JsonLines(process) if json_lines else
                         _Plain(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
