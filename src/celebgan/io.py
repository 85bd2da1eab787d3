"""Writing a file (or a folder) so that a crash, a kill or a full disk never leaves half of it."""
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celebgan.errors import UserError


def temporary_sibling(path: str | os.PathLike) -> Path:
    """`.NAME.tmpPID` next to `path`: the same file system, so os.replace() is atomic, and the
    process id keeps two processes writing the same file apart."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except NotADirectoryError:  # a file where a folder of the path should be: nothing there to remove
        pass


def remove_stale_temporaries(folder: str | os.PathLike, log: logging.Logger) -> list[Path]:
    """Removes the temporaries (`.NAME.tmpPID`) that killed processes left in `folder`; returns
    them. One whose process still runs is another writer's: it is reported and left alone."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp*")):
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or int(match[1]) == os.getpid():
            continue
        if is_running(int(match[1])):
            log.warning("%s belongs to process %s, which still runs: left alone.", path, match[1])
            continue
        try:
            size = path.stat().st_size if path.is_file() else 0
            _remove(path)
        except FileNotFoundError:  # another process removed it first
            continue
        except OSError as err:  # a read-only folder: its reader still works, the space stays taken
            log.warning("Could not remove %s, left by a process that was stopped while writing (%s).", path, err)
            continue
        log.info("Removed %s (%.1f MB), left by a process that was stopped while writing.", path, size / 1e6)
        removed.append(path)
    return removed


_TEMPORARY = re.compile(r"\..+\.tmp(\d+)")


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_write(path: str | os.PathLike, *, hint: str = "") -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write (a file, or a folder the caller creates);
    on success it replaces `path` in one step, on any failure it is removed and `path` is left as
    it was. An OSError (a full disk, a quota, a vanished mount) becomes a UserError naming the file
    and the reason; `hint` ends that message (what to do about it)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        _remove(tmp)  # a leftover of a killed process with the same id
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"Could not write {path}: {err}.{hint}") from err
    finally:
        _remove(tmp)


def format_duration(seconds: float) -> str:
    """A time as a person reads it in a progress line or an estimate: 42 s, 17 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
