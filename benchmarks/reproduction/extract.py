"""Shrink a sweep's trajectory.h5 for the trip back from the GPU machine (files of at most 16 MiB):
thermo.h5 (every dataset and attribute but the positions) and li_production_positions.npy (Li positions of
the production stage, [R, F, N_Li, 3] float32, Angstrom, unwrapped). Usage: extract.py TRAJ.h5 OUT_DIR
(lycb_jax on PYTHONPATH: the trajectory is opened by its reader, :func:`lycb_jax.md.trajectory.read_trajectory`)."""

import sys
from pathlib import Path

import h5py  # writes thermo.h5
import numpy as np

from lycb_jax.md.trajectory import read_trajectory


def main(traj: str, out: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with read_trajectory(traj) as f, h5py.File(out / "thermo.h5", "w") as g:
        g.attrs.update(dict(f.attrs))
        for stage in f:
            for name in f[stage]:
                if name != "positions":
                    g.create_dataset(f"{stage}/{name}", data=f[stage][name][()], compression="gzip")
            g[stage].attrs.update(dict(f[stage].attrs))
        li = np.flatnonzero(np.atleast_2d(f.attrs["numbers"])[0] == 3)
        np.save(out / "li_production_positions.npy", f["production/positions"][:, :, li].astype(np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:3])
