"""Fault injection: kill this process at a named point, to test that every command resumes after a
kill (``tests/io/test_faults.py``, ``benchmarks/fault_injection.py``).

``LYCB_JAX_FAULT="point:n"`` (several: comma-separated) makes the n-th call of ``maybe_fail(point)``
in this process send SIGKILL to itself: no cleanup, no flush, as a power cut or the OOM killer would;
``"point:n:EACCES"`` (or another errno name) raises that OSError there instead, as a read-only folder or a
full disk would (for root on file systems where ``chattr +i`` cannot make a folder read-only).
``LYCB_JAX_FAULT_LOG=FILE`` appends each point reached (``point n``) to FILE, so that a harness can
list the points a run passes. With neither set, ``maybe_fail`` only reads the environment.

The points (``<file>.<moment>``; files written by :func:`lycb_jax.io.durable.atomic_write`):
``<kind>.written`` (temporary file written and synced, not renamed), ``<kind>.rotated`` (the
previous generation renamed to ``*.prev.*``, the new one not yet in place), ``<kind>.renamed`` (new
file in place); kinds: ``md_checkpoint``, ``train_state``, ``model_params``, ``model_manifest``,
``active_candidates``, ``active_labelled``, ``active_settings``, ``ranking_cif``, ``ranking_csv``.
Between the writes: ``md_trajectory.half_appended`` (a chunk's frames half written into the HDF5
file), ``md_trajectory.appended`` (a chunk's frames appended, not yet covered by a checkpoint).
"""

from __future__ import annotations

import errno
import os
import signal

ENV, LOG_ENV = "LYCB_JAX_FAULT", "LYCB_JAX_FAULT_LOG"
_reached: dict[str, int] = {}


def maybe_fail(point: str) -> None:
    """Count ``point``; SIGKILL this process if $LYCB_JAX_FAULT asks for this count of it."""
    spec, log = os.environ.get(ENV), os.environ.get(LOG_ENV)
    if not spec and not log:
        return
    n = _reached[point] = _reached.get(point, 0) + 1
    if log:
        with open(log, "a") as fh:
            fh.write(f"{point} {n}\n")
    for item in (spec or "").split(","):
        name, count, error = (item.strip().split(":") + ["", ""])[:3]
        if name == point and count.strip() == str(n):
            if error:  # "point:n:EACCES" / "point:n:ENOSPC": the OS refuses the write instead of a kill
                code = getattr(errno, error)
                raise OSError(code, os.strerror(code))
            os.kill(os.getpid(), signal.SIGKILL)
