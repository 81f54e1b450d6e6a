"""Output files and folders: checked before any work starts, written atomically next to the target.

No command destroys what it did not create: an existing `.kd` file, a symlink, a device or a folder is never
replaced by an output file, and a write that fails leaves the target as it was and no temporary file behind.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_text(check_output_file(folder / "loss.py"), "x = 1\\n")
>>> sorted(p.name for p in folder.iterdir())
['loss.py']
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import KDError


def read_only(path: Path) -> bool:
    """Nobody may write it: no write permission bit set (also as root, who could write it anyway), or not
    writable for this user, or on a read-only file system."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not mode & 0o222 or not os.access(path, os.W_OK)


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise KDError(f"{what}: folder {folder} does not exist", hint="create it first, or pick another path")
    if not folder.is_dir():
        raise KDError(f"{what}: {folder} is not a folder")
    if read_only(folder) or not os.access(folder, os.X_OK):
        raise KDError(f"{what}: folder {folder} is not writable")


def check_output_file(path: Path, *, option: str = "--out") -> Path:
    """``path`` if a command may write a file there; else a :class:`KDError` naming the command-line value.

    Refused: an existing `.kd` file (a source is never overwritten), anything that is not a regular file
    (folder, symlink, device, FIFO), a read-only file, and a missing or read-only folder.
    """
    path = Path(path)
    what = f"{option} {path} (command-line value)"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise KDError(f"{what}: cannot use it ({err.strerror})") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise KDError(f"{what}: is a folder", hint="name a file inside it")
        if not stat.S_ISREG(mode):
            raise KDError(f"{what}: is not a regular file (a link, device or pipe); it is left as it is",
                          hint="write to a new file")
        if path.suffix == ".kd":
            raise KDError(f"{what}: refusing to overwrite the .kd file", hint="write to a new file, or remove "
                          "the old one first")
        if read_only(path):
            raise KDError(f"{what}: the file is read-only; it was left as it is")
    _writable_folder(path.parent if str(path.parent) else Path("."), what)
    return path


def check_output_folder(path: Path, *, option: str = "--out") -> Path:
    """``path`` if a command may create or fill a folder there (its nearest existing parent is writable)."""
    path = Path(path)
    what = f"{option} {path} (command-line value)"
    if path.is_symlink() and not path.is_dir():
        raise KDError(f"{what}: is a link to no folder")
    if path.exists():
        if not path.is_dir():
            raise KDError(f"{what}: is a file, not a folder")
        if read_only(path) or not os.access(path, os.X_OK):
            raise KDError(f"{what}: folder is not writable")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    _writable_folder(parent, what)
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, then a rename."""
    _atomic(Path(path), text.encode("utf-8"), mode=None)


def write_bytes(path: Path, data: bytes) -> None:
    """As :func:`write_text`, for bytes."""
    _atomic(Path(path), data, mode=None)


def replace_text(path: Path, text: str) -> None:
    """Rewrite an existing file in place (atomically, keeping its permissions); a read-only file is refused."""
    path = Path(path)
    if read_only(path):
        raise KDError(f"{path}: the file is read-only; it was left as it is")
    _writable_folder(path.parent if str(path.parent) else Path("."), str(path))
    _atomic(path, text.encode("utf-8"), mode=stat.S_IMODE(os.stat(path).st_mode))


def _atomic(path: Path, data: bytes, mode: int | None) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise KDError(f"cannot write {path} ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if mode is None:  # a new file gets the usual permissions (mkstemp makes it private)
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise KDError(f"cannot write {path} ({err.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
