"""Checkpoint files that survive a kill, a full disk or damage on disk: one place for writing and
reading them.

- :func:`atomic_write`: a temporary file in the same folder, fsync, then rename over the target (a
  kill leaves the old file or the new one, never half of one); optionally the file there before is
  kept as the previous generation (``checkpoint.npz`` -> ``checkpoint.prev.npz``). A failed write
  (full disk, read-only folder) raises :class:`CheckpointWriteError` naming the folder and leaves
  the files there untouched.
- :func:`save_npz` / :func:`load_npz`: an ``.npz`` with a SHA-256 of its arrays inside (entry
  ``sha256``), loaded without pickles and verified; :func:`load_npz_or_previous` falls back to the
  previous generation with a warning naming the damaged file.
- :func:`write_with_digest` / :func:`verified`: for single-generation files (extxyz, CSV), a
  ``<file>.sha256`` written before the file itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lycb_jax.io.faults import maybe_fail
from lycb_jax.io.errors import InputError


class CheckpointWriteError(InputError):
    """A checkpoint or output file could not be written (disk full, folder not writable); the
    message names the folder. The files written there before are intact."""


class CorruptCheckpointError(InputError):
    """A checkpoint is truncated or damaged (checksum mismatch, unreadable), and no previous
    generation is good either."""


def previous(path: Path) -> Path:
    """The previous generation of ``path``: ``a/checkpoint.npz`` -> ``a/checkpoint.prev.npz``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return "the disk is full"
    if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    return err.strerror or str(err)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], point: str, *,
                 keep_previous: bool = False) -> None:
    """Write ``path`` through ``write(fh)`` atomically (temporary file, fsync, rename; the folder is
    created). With ``keep_previous`` the file there before becomes :func:`previous` (path). Fault
    points ``<point>.written``, ``<point>.rotated``, ``<point>.renamed`` (:mod:`lycb_jax.io.faults`).
    Raises :class:`CheckpointWriteError` if the disk is full or the folder not writable."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        maybe_fail(f"{point}.written")
        if keep_previous and path.exists():
            os.replace(path, previous(path))
            maybe_fail(f"{point}.rotated")
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise CheckpointWriteError(f"cannot write {path.name} in {path.parent}: {_why(err)} ({err.strerror or err}); "
                                   "the last good checkpoint there is kept. Free space or choose a writable folder, "
                                   "then run again with --resume") from err
    maybe_fail(f"{point}.renamed")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def array_digest(arrays: dict) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_npz(path: str | Path, arrays: dict, point: str, *, keep_previous: bool = True) -> None:
    """Write ``arrays`` (name -> array, no object arrays) to ``path`` with their :func:`array_digest`
    as entry ``sha256``, atomically (:func:`atomic_write`), keeping the previous generation."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if "sha256" in arrays:
        raise ValueError("'sha256' is reserved for the checksum")
    digest = array_digest(arrays)
    atomic_write(path, lambda fh: np.savez(fh, sha256=np.array(digest), **arrays), point, keep_previous=keep_previous)


def load_npz(path: str | Path) -> dict:
    """The arrays of an ``.npz`` written by :func:`save_npz`, checked against their checksum, read
    without pickles. Raises :class:`CorruptCheckpointError` if it is truncated or damaged. (A file
    without ``sha256``, from an older version, is accepted: zip's CRC-32 is still checked.)"""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"{path} is truncated or damaged (not a complete .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(f"{path} is truncated or damaged ({type(err).__name__}: {err})") from err
    stored = data.pop("sha256", None)
    if stored is not None and str(stored) != array_digest(data):
        raise CorruptCheckpointError(f"{path} is damaged: its SHA-256 checksum does not match its contents")
    return data


def load_npz_or_previous(path: str | Path) -> tuple[dict, Path]:
    """(arrays, file used): ``path`` if it is good, else its previous generation, with a warning
    naming the damaged file; :class:`CorruptCheckpointError` if neither exists in a good state."""
    path = Path(path)
    problems = []
    for p in (path, previous(path)):
        if not p.exists():
            problems.append(f"{p} does not exist")
            continue
        try:
            data = load_npz(p)
        except CorruptCheckpointError as err:
            problems.append(str(err))
            continue
        if p != path and path.exists():
            print(f"WARNING: {problems[0]}; using the previous checkpoint {p.name}", file=sys.stderr, flush=True)
        return data, p
    raise CorruptCheckpointError(f"no good checkpoint to resume from: {'; '.join(problems)}. Remove them (or the "
                                 "folder) to start afresh")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def write_with_digest(path: str | Path, write: Callable[[BinaryIO], None], point: str) -> None:
    """Write ``path`` atomically with its SHA-256 in ``<path>.sha256`` (written first: a kill
    between the two leaves a digest without its file, which reads as 'not written yet')."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    write(buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(digest_path(path), lambda fh: fh.write(f"{digest}  {path.name}\n".encode()), point + "_digest")
    atomic_write(path, lambda fh: fh.write(data), point)


def verified(path: str | Path) -> bool:
    """True if ``path`` exists and matches its ``<path>.sha256`` (or has none: an older version's); a
    damaged one is reported, renamed to ``<path>.damaged`` and False returned (it is made again)."""
    path = Path(path)
    if not path.exists():
        return False
    dp = digest_path(path)
    if not dp.exists():  # written by an older version, before digests
        return True
    try:
        ok = dp.read_text().split()[0] == file_digest(path)
    except (OSError, IndexError):
        ok = False
    if not ok:
        print(f"WARNING: {path} is damaged (its SHA-256 differs from {dp.name}); making it again",
              file=sys.stderr, flush=True)
        os.replace(path, path.with_name(path.name + ".damaged"))
    return ok
