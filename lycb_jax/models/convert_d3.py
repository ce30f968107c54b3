"""Convert the DFT-D3 reference data of ``tad-dftd3`` into ``checkpoints/d3/d3_reference.npz`` (run once).

    python -m lycb_jax.models.convert_d3 [--out checkpoints/d3]

Nothing is typed by hand: the arrays are tad-dftd3's own (``reference-c6.pt``, its reference
coordination numbers, ``R4R2`` and tad-mctc's ``COV_D3``), in atomic units, for elements 0..94
(index 0 a dummy). ``README.json`` next to the file records the source packages, their versions
and the file's SHA-256. Needs ``pip install tad-dftd3`` (and torch).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np

from lycb_jax.io.structures import N_ELEMENTS



def reference_arrays() -> dict[str, np.ndarray]:
    """c6 [95, 95, 7, 7] (Hartree bohr^6), cn [95, 7] (reference CNs, -1 = no reference),
    r4r2 [95] (sqrt(0.5 <r4>/<r2> sqrt(Z)), the C8/C6 factor; C8 = 3 C6 r4r2_i r4r2_j),
    rcov [95] (bohr, covalent radii already scaled by 4/3), all float64."""
    import torch
    from tad_dftd3.data import R4R2
    from tad_dftd3.reference import Reference
    from tad_mctc.data.radii import COV_D3

    ref = Reference(dtype=torch.float64)
    n = N_ELEMENTS + 1
    return {"c6": ref.c6[:n, :n].numpy(), "cn": ref.cn[:n].numpy(),
            "r4r2": R4R2(dtype=torch.float64)[:n].numpy(), "rcov": COV_D3(dtype=torch.float64)[:n].numpy()}


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "checkpoints" / "d3"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = reference_arrays()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    (out / "d3_reference.npz").write_bytes(data)
    readme = {
        "file": "d3_reference.npz",
        "sha256": hashlib.sha256(data).hexdigest(),
        "source": {"tad-dftd3": version("tad-dftd3"), "tad-mctc": version("tad-mctc"), "torch": version("torch")},
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "units": "atomic units: c6 Hartree bohr^6, rcov bohr (x 4/3 included), cn and r4r2 dimensionless",
        "elements": f"Z = 0..{N_ELEMENTS} (0 is a dummy row)",
        "made_by": "python -m lycb_jax.models.convert_d3",
        "date": datetime.date.today().isoformat(),
        "licence": "tad-dftd3 and tad-mctc: Apache-2.0 (data from S. Grimme's DFT-D3)",
    }
    (out / "README.json").write_text(json.dumps(readme, indent=2) + "\n")
    return out / "d3_reference.npz"


if __name__ == "__main__":
    print(main())
