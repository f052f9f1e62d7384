"""Files the front doors read and write: checked before any work starts, written atomically.

* :func:`output_folder` / :func:`output_file` refuse, in one line, an output that is an input
  (compared as resolved paths), a folder where a file is wanted (or the reverse), a path under
  a file, and a place that cannot be written (permissions, a read-only filesystem): they try.
* :func:`atomic_write` and :class:`AtomicFile` write to a temporary file in the same folder and
  rename it into place, so a killed run leaves the old file or a complete new one, never half.
* :func:`terminate_as_interrupt` turns SIGTERM into :class:`Terminated`, a ``KeyboardInterrupt``,
  so the front doors finish their files on ``kill`` as on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType

from camcore.errors import CamcoreError

__all__ = [
    "IMAGE_SUFFIXES",
    "AtomicFile",
    "Terminated",
    "atomic_write",
    "image_files",
    "output_file",
    "output_folder",
    "terminate_as_interrupt",
    "uninterrupted",
]

#: the image files a folder given as input contributes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")


def image_files(folder: str | Path) -> list[str]:
    """The images of a folder (by suffix, :data:`IMAGE_SUFFIXES`), sorted by name.

    Raises:
        CamcoreError: the folder holds no images.
    """
    found = sorted(str(f) for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise CamcoreError(f"folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _refuse_inputs(out: Path, inputs: Iterable[str | Path], option: str) -> None:
    for src in inputs:
        if _same(out, Path(src)):
            raise CamcoreError(
                f"{option} {str(out)!r} is an input: choose another path, camcore never overwrites its input"
            )


def _probe(folder: Path, option: str) -> None:
    """Write and remove a small file in ``folder`` (permissions, read-only filesystems, full disks)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".camcore-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise CamcoreError(f"cannot write in {option} folder {str(folder)!r}: {exc.strerror or exc}") from None


def _make_folder(folder: Path, option: str, given: Path | None = None) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            shown = str(given or folder)
            raise CamcoreError(f"{option} {shown!r} lies under {str(parent)!r}, which is a file, not a folder")
        if parent.exists():
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CamcoreError(f"cannot create {option} folder {str(folder)!r}: {exc.strerror or exc}") from None


def output_folder(path: str | Path, inputs: Iterable[str | Path] = (), option: str = "--out") -> Path:
    """Create (if needed) and check an output folder; it must not be an input.

    Raises:
        CamcoreError: ``path`` is a file or lies under one, is an input, or cannot be written.
    """
    folder = Path(path)
    _refuse_inputs(folder, inputs, option)
    if folder.exists() and not folder.is_dir():
        raise CamcoreError(f"{option} {str(folder)!r} is a file; {option} takes a folder")
    _make_folder(folder, option)
    _probe(folder, option)
    return folder


def output_file(path: str | Path, inputs: Iterable[str | Path] = (), option: str = "-o") -> Path:
    """Check an output file's path (its folder is created); it must not be an input.

    Raises:
        CamcoreError: ``path`` is a folder, is an input, or its folder cannot be written.
    """
    out = Path(path)
    _refuse_inputs(out, inputs, option)
    if out.is_dir():
        raise CamcoreError(f"{option} {str(out)!r} is a folder; {option} takes a file name")
    _make_folder(out.parent, option, out)
    _probe(out.parent, option)
    return out


def _umask() -> int:
    mask = os.umask(0o022)  # read it (there is no getter); set back at once, at import
    os.umask(mask)
    return mask


#: what a new file's mode is: rw for whom the user's umask allows (mkstemp's own is 0600)
NEW_FILE_MODE = 0o666 & ~_umask()


def _temporary(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    try:
        os.fchmod(fd, NEW_FILE_MODE)  # outputs are shared (reports, videos): readable as any new file
    except (AttributeError, OSError):  # pragma: no cover - Windows has no fchmod
        pass
    finally:
        os.close(fd)
    return Path(name)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path`` (atomic on one filesystem).
    Ctrl-C and SIGTERM (under :func:`terminate_as_interrupt`) wait until the file is in place or
    its temporary removed, so no temporary is left behind."""
    target = Path(path)
    with uninterrupted():
        tmp = _temporary(target)
        try:
            write(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


class AtomicFile:
    """A file written under a temporary name beside ``path`` and renamed onto it by :meth:`commit`
    (or removed by :meth:`discard`): readers of ``path`` see the old file or a complete new one.

    Example:
        >>> f = AtomicFile("out.mp4"); write_video(f.temporary); f.commit()   # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.temporary = _temporary(self.path)
        self.done = False

    def commit(self) -> None:
        """Move the temporary file onto ``path`` (idempotent)."""
        with uninterrupted():
            if not self.done:
                os.replace(self.temporary, self.path)
                self.done = True

    def discard(self) -> None:
        """Remove the temporary file (idempotent); ``path`` stays as it was."""
        if not self.done:
            with contextlib.suppress(OSError):
                self.temporary.unlink()
            self.done = True


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that the same clean-up runs as for Ctrl-C."""


class _Signals:
    """Interrupts held back while a file is being put in place (main thread only)."""

    depth = 0
    pending: KeyboardInterrupt | None = None


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Inside the block, Ctrl-C and SIGTERM (as handled by :func:`terminate_as_interrupt`) are
    held back and raised when it ends: a file being written atomically is finished or removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Signals.depth += 1
    try:
        yield
    finally:
        _Signals.depth -= 1
        if _Signals.depth == 0 and _Signals.pending is not None:  # the outermost block raises what came
            pending, _Signals.pending = _Signals.pending, None
            raise pending


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` and Ctrl-C ``KeyboardInterrupt`` in the
    main thread, each held back while :func:`uninterrupted` is writing a file (no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if _Signals.depth:
            _Signals.pending = _Signals.pending or exc
            return
        raise exc

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
