"""Writing a file (or a folder) so that a crash, a kill or a full disk never leaves half of it."""
import os
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
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | os.PathLike, *, hint: str = "") -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write (a file, or a folder the caller creates);
    on success it replaces `path` in one step, on any failure it is removed and `path` is left as
    it was. An OSError (a full disk, a quota, a vanished mount) becomes a UserError naming the file
    and the reason; `hint` ends that message (what to do about it)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    _remove(tmp)  # a leftover of a killed process with the same id
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"Could not write {path}: {err}.{hint}") from err
    finally:
        _remove(tmp)
