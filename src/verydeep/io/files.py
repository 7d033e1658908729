"""Writing files so that nothing is lost: every output of verydeep goes through here. A path is
checked before any work (``output_target``: a regular file or a new name, in a folder this
process may write), and written whole or not at all (``atomic_write``, ``replacing``): a reader,
or a kill, sees the old file or the complete new one, never half of it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from verydeep.io.files import atomic_write, output_target
    >>> out = Path(tempfile.mkdtemp()) / "result.json"
    >>> atomic_write(output_target(out), b"{}")
    >>> out.read_bytes()
    b'{}'
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def output_target(path: str | Path) -> Path:
    """The file an atomic write of ``path`` replaces: ``path`` itself if it is new or a regular
    file, the target of a symlink to one (the link stays). Anything else (a device, a FIFO, a
    directory, a dangling chain or loop of links) is refused with a one-line ValueError.

    Commands call it on their output paths before any work, so a bad path costs nothing."""
    path = Path(path)
    try:
        target = path.resolve() if path.is_symlink() else path
    except (RuntimeError, OSError) as e:  # a loop of links
        raise ValueError(f"{path}: cannot follow the link ({e})") from None
    if target.exists() and not target.is_file():
        mode = target.stat().st_mode
        kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
        via = f" (the link's target {target})" if target != path else ""
        raise ValueError(f"{path}{via} is {kind}, not a regular file: refusing to replace it")
    _check_writable(target.parent, path)
    return target


def _check_writable(folder: Path, path: Path) -> None:
    """``folder`` exists or can be made, and takes new files: its nearest existing ancestor is a
    directory this process may write in, on a file system mounted read-write."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{path}: {probe} is not a directory")
    if os.access(probe, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "Read-only file system" if read_only else "Permission denied"
    raise ValueError(f"{path}: cannot write in {probe} ({why})")


def _named(e: OSError, path: Path, tmp: str | Path | None = None) -> OSError:
    """``e`` about the user's ``path`` where it was about the hidden temporary file written on
    the way (``tmp``, its folder, or no file named); other files' errors stay as they are."""
    if e.filename not in (None, str(tmp), str(path.parent)):
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one (see
    ``output_target`` for what may sit at ``path``)."""
    path = output_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # the folder vanished or turned read-only since it was checked
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes files owner-only; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _named(e, path, tmp) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write into; it is renamed over ``path`` when the block
    ends normally and removed when it raises, so a full disk leaves nothing half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise _named(e, path, tmp) from None
    finally:
        tmp.unlink(missing_ok=True)
