"""Real Caffe in a child process, so that whatever Caffe aborts on is one line, not a glog stack.

parity's preflight knows Caffe's rules only for the layer types parity converts; Caffe runs many more
(DetectionOutput, LSTM, a fork's own types), and a dump must not depend on what parity can convert.
So Caffe decides what it can run: the net is built and run in a forked child whose stderr (glog, with
its INFO lines on) goes to a log file, and which writes every array as .npy into a private work folder.
When the child dies (a CHECK failure is SIGABRT, an unknown layer type too), the parent reads the
log: the layer Caffe was setting up or running, and Caffe's own message, become one ParityError.

Nothing crosses the process boundary but files: JSON and .npy (read back with allow_pickle=False).
"""
from __future__ import annotations

import json
import os
import re
import signal
import traceback
from pathlib import Path
from typing import Callable

from ..errors import ParityError

FATAL = re.compile(r"^F\d{4,8} [\d:.]+\s+\d+ [^\]]*\] (?P<message>.*)$")  # glog: F20261205 11:22:33.4 123 x.cpp:77] ...
UNKNOWN_TYPE = re.compile(r"Unknown layer type: (?P<type>\S+)")
MAX_MESSAGE = 300  # characters of Caffe's message kept (its unknown-type message lists ~80 types)
SETTING_UP = re.compile(r"\] (?:Creating Layer|Setting up|Creating layer) (?P<layer>.+)$")
PROGRESS = "progress.json"  # {"sample": i, "layer": name}: written before each layer's forward


def run_in_child(work: Path, job: Callable[[Path], dict]) -> dict:
    """job(work) in a forked child; its JSON-able result. A child that fails or dies: CaffeFailure."""
    log = work / "caffe.log"
    result = work / "result.json"
    pid = os.fork()
    if pid == 0:  # the child: nothing here returns
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            os.environ["GLOG_minloglevel"] = "0"  # INFO: which layer Caffe is setting up
            os.environ["GLOG_logtostderr"] = "1"
            result.write_text(json.dumps(job(work)))
            code = 0
        except BaseException as exc:  # noqa: BLE001 - the child reports everything through its log
            if isinstance(exc, ParityError):
                (work / "parity_error.json").write_text(json.dumps(
                    {"message": exc.message, "path": str(exc.path) if exc.path else None, "line": exc.line}))
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:  # SIGTERM or Ctrl-C in the parent: the child goes too
        _kill(pid)
        raise
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and result.is_file():
        return json.loads(result.read_text())
    raise CaffeFailure(work, status)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class CaffeFailure(Exception):
    """The child stopped: where Caffe was and what it said, read off its log and progress file."""

    def __init__(self, work: Path, status: int):
        self.status = status
        self.error = _parity_error(work)
        log = _read(work / "caffe.log")
        progress = _read(work / PROGRESS)
        self.layer = json.loads(progress)["layer"] if progress else _last_setting_up(log)
        self.running = bool(progress)
        self.message = _message(log, status)
        unknown = UNKNOWN_TYPE.search(self.message)
        self.unknown_type = unknown.group("type") if unknown else None
        super().__init__(self.message)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _parity_error(work: Path) -> ParityError | None:
    text = _read(work / "parity_error.json")
    if not text:
        return None
    found = json.loads(text)
    return ParityError(found["message"], found["path"], found["line"])


def _last_setting_up(log: str) -> str | None:
    found = [m.group("layer").strip() for m in map(SETTING_UP.search, log.splitlines()) if m]
    return found[-1] if found else None


def _message(log: str, status: int) -> str:
    """Caffe's own words: its FATAL line (a CHECK's condition and message), else Python's last line."""
    lines = log.splitlines()
    for line in reversed(lines):
        m = FATAL.match(line.strip())
        if m:
            message = m.group("message").split(" (known types:")[0].strip()
            return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " ..."
    python = [line for line in lines if line and not line.startswith((" ", "Traceback", "I", "W"))]
    if python:
        return python[-1].strip()
    if os.WIFSIGNALED(status):
        return f"Caffe ended with signal {signal.Signals(os.WTERMSIG(status)).name} and said nothing"
    return f"Caffe exited with status {os.WEXITSTATUS(status)}"
