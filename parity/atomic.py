"""Files on disk: written whole or not at all, and identified by sha256.

Writes go to a temporary sibling and are renamed over the target, so a reader (another pytest
worker, a CI step, a user's script) never sees half a caffemodel, model or report, and a failure
leaves no debris behind. sha256 is how manifests tie references to the files Caffe saw.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from .errors import ParityError


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def exit_cleanly_on_sigterm(owns_process: bool) -> None:
    """Make SIGTERM (what CI runners and process managers send on a timeout) unwind the command as Ctrl-C
    does: the exception runs every `finally` and context manager on the way out, so temporary files
    (a half-written .keras, a staged reference folder) go, and the process then exits 143 (128 + 15).

    Only for a process parity owns (`main()` as the `parity` command, `owns_process`): a program that
    calls `main(argv)` itself, pytest for one, keeps its own SIGTERM behaviour. Installed once, from
    the main thread (the only one Python lets set handlers)."""
    if owns_process and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    """SystemExit passes every `except Exception` and reaches the interpreter with the conventional status;
    a second SIGTERM during the cleanup ends the process at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: str | Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp make private (0600/0700) files; a report or reference should get the usual mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`, for writers that check extensions);
    on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(target: str | Path, replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target` (old contents go), on error it goes.

    An existing `target` goes only if `replaceable(target)` says so (a dump replaces only a folder it
    wrote, never a user's), and never when it is a symbolic link: replacing one would delete what the
    link points to, or leave the link's folder half-swapped. Checked before staging and again at the swap.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(target, replaceable)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield stage
        _usual_mode(stage, directory=True)
        _swap_in(stage, target, replaceable)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # after a swap the name is free: nothing to remove


SWAP_TRIES = 50  # concurrent writers of one folder: each try loses only to a writer that finished meanwhile


def check_replaceable(target: Path, replaceable: Callable[[Path], bool] | None) -> None:
    """Refuse a symbolic link at `target`, or an existing `target` that `replaceable` (when given) refuses."""
    if target.is_symlink():
        raise ParityError("is a symbolic link: parity replaces only a folder it wrote, never what a link points "
                          "to; remove the link or choose another output folder", target)
    if os.path.lexists(target) and replaceable is not None and not replaceable(target):
        raise ParityError("exists and is not a reference folder parity wrote (no parity manifest.json in it), so "
                          "it is not replaced; move it away or choose another output folder", target)


BUSY = (errno.ENOTEMPTY, errno.EEXIST)  # rename's answer when `target` holds a non-empty folder


def _swap_in(stage: Path, target: Path, replaceable: Callable[[Path], bool] | None) -> None:
    """Rename `stage` to `target`, the old `target` first renamed aside under a name of its own.

    Another writer may put its folder at `target` between the two renames (the rename then fails with
    ENOTEMPTY or EEXIST): that folder is moved aside in turn and the swap tried again. A fixed aside
    name would be shared by the writers, which is how the old code raced."""
    for _ in range(SWAP_TRIES):
        check_replaceable(target, replaceable)
        aside = _move_aside(target)
        try:
            os.rename(stage, target)
        except BaseException as exc:  # an error or a signal: the old folder goes back, unless a newer one is there
            _put_back(aside, target)
            if not (isinstance(exc, OSError) and exc.errno in BUSY):
                raise
            continue
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return
    raise ParityError(f"other writers kept replacing this folder; gave up after {SWAP_TRIES} tries", target)


def _put_back(aside: Path | None, target: Path) -> None:
    """Return the moved-aside folder to `target`; if another writer's newer folder holds it, drop the old one."""
    if aside is None:
        return
    try:
        os.rename(aside, target)
    except OSError as exc:
        if exc.errno in BUSY:
            shutil.rmtree(aside, ignore_errors=True)


def _move_aside(target: Path) -> Path | None:
    """Rename `target` onto a fresh empty folder (POSIX lets a folder replace an empty one); None if it is gone."""
    if not os.path.lexists(target):
        return None
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        os.rename(target, aside)
    except FileNotFoundError:  # another writer moved it aside first
        os.rmdir(aside)
        return None
    except OSError:
        os.rmdir(aside)
        raise
    return aside
