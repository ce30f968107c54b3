"""The MD protocol: :class:`Protocol` (heating, NVT, optional NpT, production; every duration and
setting), its validation, and :meth:`Protocol.load` (a settings file read and checked by
:mod:`lycb_jax.io.config`). The driver that runs it is :class:`lycb_jax.md.simulation.Simulation`.

Units: times in ps (stage lengths) or fs (time step, saving), temperatures in K, pressure in bar,
lengths in Angstrom.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lycb_jax.io.config import protocol_path, settings_from
from lycb_jax.md.settings import BAROSTATS


MAX_DT_FS_WITH_LI = 5.0  # fs: the longest time step accepted for a structure with Li


@dataclasses.dataclass
class Protocol:
    """The paper's MD protocol; every duration and setting can be changed (times in ps, T in K).

    Maxwell-Boltzmann velocities at ``start_K``, linear heating to the target over ``heat_ps`` at
    fixed cell (NVT), ``nvt_ps`` NVT equilibration, optionally ``npt_ps`` NpT at ``pressure_bar``
    followed by setting the cell to its average over the last ``npt_average_ps`` (the full cell
    matrix, positions mapped affinely), then ``production_ps`` of NVT production. ``dt_fs``,
    ``save_every_fs``, ``tau_t_fs`` and ``tau_p_fs`` in fs; ``chunk_ps`` of MD per compiled call;
    ``skin`` of the Verlet list in Angstrom.

    ``barostat``: the NpT cell motions (:data:`lycb_jax.md.settings.BAROSTATS`): "tri" (default:
    every cell parameter, as LAMMPS ``fix npt ... tri``), "aniso" (x, y, z separately), "iso" (the
    shape kept). ``drift_bound_meV``: a replica whose conserved quantity drifts faster than this
    (meV/atom/ps, least-squares slope over the stage so far; not checked while heating) is flagged.
    A time step above ``MAX_DT_FS_WITH_LI`` fs with Li present is refused.

    ``streaming_msd_every_fs`` > 0 (fs, a multiple of ``dt_fs``; 0 = off): during production the MD also
    accumulates the multiple-time-origin MSD of ``streaming_msd_species`` (:mod:`lycb_jax.md.observables`,
    ``streaming_msd_levels`` levels x ``streaming_msd_block`` lags: lags up to block**levels x every_fs),
    carried in the checkpoints and written to the trajectory (:func:`lycb_jax.md.trajectory.write_streaming_msd`).
    """

    temperatures_K: tuple[float, ...] = (600.0, 700.0, 800.0)
    dt_fs: float = 1.0
    tau_t_fs: float = 100.0
    tau_p_fs: float = 1000.0
    pressure_bar: float = 1.0
    start_K: float = 100.0
    heat_ps: float = 2.0
    nvt_ps: float = 50.0
    npt_ps: float = 0.0
    npt_average_ps: float = 112.0
    production_ps: float = 2000.0
    save_every_fs: float = 50.0
    chunk_ps: float = 1.0
    checkpoint_every_ps: float = 10.0
    seed: int = 0
    skin: float = 1.0  # Verlet-list skin, Angstrom
    max_temperature_factor: float = 3.0
    barostat: str = "tri"
    drift_bound_meV: float = 1.0  # meV/atom/ps
    streaming_msd_every_fs: float = 0.0  # fs between streaming-MSD updates in production; 0 = off
    streaming_msd_levels: int = 5
    streaming_msd_block: int = 10
    streaming_msd_species: str = "Li"

    @classmethod
    def load(cls, config: str | Path | None = None, **overrides) -> "Protocol":
        """The protocol of a settings file (TOML, YAML or JSON; keys = Protocol fields, optionally under ``[md]``)
        or of a named one (``cpu``, ``gpu``, ``paper``: :func:`lycb_jax.io.config.protocol_path`), or the
        defaults (``config`` None), updated with the ``overrides`` that are not None. Read and checked by
        :func:`lycb_jax.io.config.settings_from`: InputError (a ValueError) naming the file or "command line"
        for unknown keys, wrong types or units. Not validated here: :meth:`validate`."""
        fields = settings_from(protocol_path(config) if config else None, cls, "md", **overrides)
        if "temperatures_K" in fields:
            fields["temperatures_K"] = tuple(float(t) for t in fields["temperatures_K"])
        return cls(**fields)

    def validate(self) -> None:
        t = np.asarray(self.temperatures_K, float)
        if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError(f"temperatures must be positive (K), got {list(self.temperatures_K)}")
        if self.start_K <= 0:
            raise ValueError(f"start temperature must be positive, got {self.start_K} K")
        if not 0 < self.dt_fs <= 10:
            raise ValueError(f"time step {self.dt_fs} fs is outside (0, 10] fs")
        if self.save_every_fs < self.dt_fs or self.chunk_ps * 1000 < self.save_every_fs:
            raise ValueError("need dt_fs <= save_every_fs <= chunk_ps * 1000")
        if self.npt_ps and self.npt_average_ps > self.npt_ps:
            raise ValueError(f"npt_average_ps {self.npt_average_ps} exceeds npt_ps {self.npt_ps}")
        if self.barostat not in BAROSTATS:
            raise ValueError(f"unknown barostat {self.barostat!r}: use {', '.join(map(repr, BAROSTATS))}")
        if not self.drift_bound_meV > 0:
            raise ValueError(f"drift_bound_meV must be positive (meV/atom/ps), got {self.drift_bound_meV}")
        self._validate_streaming_msd()

    def _validate_streaming_msd(self) -> None:
        every, levels, block = self.streaming_msd_every_fs, self.streaming_msd_levels, self.streaming_msd_block
        if not (np.isfinite(every) and every >= 0):
            raise ValueError(f"streaming_msd_every_fs must be >= 0 fs (0 = off), got {every}")
        if every == 0:
            return
        if every < self.dt_fs or abs(every / self.dt_fs - round(every / self.dt_fs)) > 1e-6:
            raise ValueError(f"streaming_msd_every_fs {every} fs must be a multiple of the time step {self.dt_fs} fs")
        if not (isinstance(levels, int) and levels >= 1 and isinstance(block, int) and block >= 2):
            raise ValueError(f"streaming MSD needs integer levels >= 1 and block >= 2, got levels {levels!r}, "
                             f"block {block!r}")
        if block ** levels >= 2**31:
            raise ValueError(f"streaming MSD block**levels = {block}**{levels} overflows the int32 step counter")
        from ase.data import atomic_numbers

        if self.streaming_msd_species not in atomic_numbers:
            raise ValueError(f"streaming_msd_species {self.streaming_msd_species!r} is not an element symbol")

    def check_time_step(self, numbers) -> None:
        """ValueError for a time step above ``MAX_DT_FS_WITH_LI`` fs when Li (Z = 3) is among ``numbers``."""
        if self.dt_fs > MAX_DT_FS_WITH_LI and np.any(np.asarray(numbers) == 3):
            raise ValueError(f"time step {self.dt_fs} fs is too long for Li (at most {MAX_DT_FS_WITH_LI} fs): Li's "
                             "vibrations are not resolved and the integration breaks down (at 10 fs and 1500 K the "
                             "conserved quantity drifted 67 meV/atom/ps); the paper used 1 fs")

    def stages(self) -> list[tuple[str, str, int, bool]]:
        """(name, ensemble, steps, heating?) of each stage with steps > 0."""
        steps = lambda ps: int(round(ps * 1000 / self.dt_fs))  # noqa: E731
        out = [("heat", "nvt", steps(self.heat_ps), True), ("nvt", "nvt", steps(self.nvt_ps), False)]
        if self.npt_ps:
            out.append(("npt", "npt", steps(self.npt_ps), False))
        out.append(("production", "nvt", steps(self.production_ps), False))
        return [s for s in out if s[2] > 0]
