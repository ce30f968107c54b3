"""SevenNet-0 port: parity with ``sevenn``'s own ASE calculator (PyTorch), autodiff against finite
differences, the shipped checkpoint against a fresh conversion, and the workflows that take a model.

Parity: float32 against ``sevenn``'s float32 calculator on the 35 structures of the CHGNet parity set
(LYC/LYB/LYCB-like, thin, skewed, strained, rattled, other chemistries) with the issue's tolerances;
float64 against the same calculator with ``sevenn``'s model in float64 on a subset (the port
itself, to round-off; e3nn stores its Clebsch-Gordan buffers as float32 values, 3e-8 relative, so
they are replaced by e3nn's own float64 ``wigner_3j`` there). Finite differences of our float64
energies check the autodiff forces and stress. The reference is slow on CPU, hence the subset.
"""

from __future__ import annotations

import importlib
import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.io.ase import AseAtomsAdaptor
from cells import parity_set

import lycb_jax
from lycb_jax.units import EV_A3_TO_GPA

TOL32 = {"e": 2e-5, "f": 2e-4, "s": 5e-3}  # eV/atom, eV/A, GPa (the issue's)
TOL64 = {"e": 1e-12, "f": 1e-11, "s": 1e-11}  # round-off of two float64 evaluations (measured <= 6e-14)
SUBSET64 = ["LYC_rs_thin_211", "LYB_rattled_0.3", "LYCB_strained_0.05", "LYCB_skewed_rattled", "NiO_afm_like",
            "NiAl_skewed"]
FD_STEP = 1e-4  # Angstrom (positions) and dimensionless (strain)


def _sevenn_calculators():
    """``sevenn``'s ASE calculator for SevenNet-0 in float32 (as shipped) and in float64."""
    import sevenn._keys as KEY
    import sevenn.util
    import torch
    from ase.calculators.calculator import Calculator, all_changes
    from e3nn import o3
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.calculator import SevenNetCalculator
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    class OnehotFloat64(torch.nn.Module):
        """sevenn's one-hot embedding casts to float32 (``.float()``); exact 0/1 values, cast back."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, data):
            data = self.inner(data)
            for k in (KEY.NODE_FEATURE, KEY.NODE_ATTR):
                data[k] = data[k].double()
            return data

    class Calculator64(SevenNetCalculator):
        """``SevenNetCalculator.calculate`` with the graph arrays in float64 (sevenn converts to float32)."""

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            Calculator.calculate(self, atoms, properties, system_changes)
            d = unlabeled_atoms_to_graph(atoms, self.cutoff)
            d = {k: v if k == KEY.INFO else sevenn.util.dtype_correct(v, float_dtype=torch.float64)
                 for k, v in d.items()}
            self.results = self.output_to_results(self.model(AtomGraphData(**d)))

    model64 = sevenn.util.load_checkpoint("7net-0").build_model().double()
    model64._modules["onehot_idx_to_onehot"] = OnehotFloat64(model64._modules["onehot_idx_to_onehot"])
    with torch.no_grad():  # e3nn's Clebsch-Gordan buffers are float32 values (3e-8 relative): exact ones from e3nn
        for name, buf in model64.named_buffers():
            if "_w3j_" in name:
                buf.copy_(o3.wigner_3j(*(int(c) for c in name.split("_w3j_")[1].split("_")), dtype=torch.float64))
    return SevenNetCalculator("7net-0", device="cpu"), Calculator64(model64, file_type="model_instance", device="cpu")


def _reference(calc, structure) -> dict:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    return {"e": atoms.get_potential_energy() / len(atoms), "f": atoms.get_forces(),
            "s": atoms.get_stress(voigt=False) * EV_A3_TO_GPA}


def _ours(model, structures) -> list[dict]:
    """Our predictions through lycb_jax.predict; 8192 padded edges per call keep XLA's temporaries at ~1.6 GB
    (float32; SevenNet-0 needs ~200 kB per edge on the CPU), not the 4 GB of one call for all 27 small cells."""
    preds = lycb_jax.predict(model, structures, max_edges_per_batch=8192)
    return [{"e": p.energy_per_atom, "f": p.forces, "s": p.stress, "energy": p.energy} for p in preds]


def _diff(a, b) -> dict:
    return {k: float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in TOL32}


def _worst(names, a, b) -> dict:
    worst: dict = {}
    for name, x, y in zip(names, a, b):
        for k, v in _diff(x, y).items():
            if v >= worst.get(k, (-1.0, ""))[0]:
                worst[k] = (v, name)
    return worst


def _fd_copies(structure):
    """Displaced and strained copies for central differences: (label, structure) pairs."""
    out = []
    for atom, axis in ((0, 0), (3, 2)):
        for sign in (1, -1):
            s = structure.copy()
            s.translate_sites([atom], np.eye(3)[axis] * sign * FD_STEP, frac_coords=False, to_unit_cell=False)
            out.append((("f", atom, axis, sign), s))
    for i, j in ((0, 0), (1, 2), (2, 0)):
        for sign in (1, -1):
            deform = np.eye(3)
            deform[i, j] += sign * FD_STEP  # x -> x (I + strain), cells as rows
            s = structure.copy()
            s.lattice = s.lattice.__class__(structure.lattice.matrix @ deform)  # fractional coordinates kept
            out.append((("s", i, j, sign), s))
    return out


pytestmark = pytest.mark.xdist_group("sevenn_parity")  # one worker computes the references

@pytest.fixture(scope="module")
def sevennet():
    return lycb_jax.load_model("sevennet-0")


@pytest.fixture(scope="module")
def results(sevennet):
    structs = parity_set()
    names = list(structs)
    importlib.import_module("sevenn")
    import torch

    calc32, calc64 = _sevenn_calculators()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~10x less CPU time on a loaded 2-core machine (OpenMP threads spin)
    try:
        ref32 = [_reference(calc32, structs[n]) for n in names]
        ref64 = [_reference(calc64, structs[n]) for n in SUBSET64]
    finally:
        torch.set_num_threads(threads)
    ours = dict(zip(names, _ours(sevennet, [structs[n] for n in names])))
    fd_base = structs["LYC_rattled_0.2"]
    fd = _fd_copies(fd_base)
    with jax.enable_x64(True):
        model64 = dataclasses.replace(sevennet, params=jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                                                                    sevennet.params))
        out64 = _ours(model64, [structs[n] for n in SUBSET64] + [fd_base] + [s for _, s in fd])
    ours64, base64 = out64[:len(SUBSET64)], out64[len(SUBSET64)]
    fd_energies = {label: o["energy"] for (label, _), o in zip(fd, out64[len(SUBSET64) + 1:])}
    return {"structures": structs, "names": names, "ref32": ref32, "ours32": [ours[n] for n in names], "ref64": ref64,
            "ours64": ours64, "fd_base": (fd_base, base64), "fd_energies": fd_energies}


@pytest.mark.slow
def test_float64_port_equals_sevenn_float64(results):
    worst = _worst(SUBSET64, results["ours64"], results["ref64"])
    print("\nfloat64 jax vs float64 sevenn, largest |diff| (eV/atom, eV/A, GPa):", worst)
    for k, (v, name) in worst.items():
        assert v <= TOL64[k], f"{k}: {v:.3g} > {TOL64[k]} on {name}"


def test_float32_parity_with_sevenn_calculator(results):
    names = results["names"]
    assert len(names) >= 30
    worst = _worst(names, results["ours32"], results["ref32"])
    print(f"\nfloat32 jax vs float32 sevenn on {len(names)} structures, largest |diff|:", worst)
    sub32 = [results["ref32"][names.index(n)] for n in SUBSET64]
    print("float32 sevenn vs float64 sevenn (its own round-off, subset):", _worst(SUBSET64, sub32, results["ref64"]))
    for k, (v, name) in worst.items():
        assert v <= TOL32[k], f"{k}: {v:.3g} > {TOL32[k]} on {name}"


def test_outputs_are_not_trivial(results):
    """Guard against parity on degenerate outputs: real forces and stresses, energies per element differ."""
    ours = results["ours32"]
    assert max(np.abs(o["f"]).max() for o in ours) > 1.0
    assert max(np.abs(o["s"]).max() for o in ours) > 1.0
    assert np.ptp([o["e"] for o in ours]) > 1.0


def test_autodiff_forces_and_stress_match_finite_differences(results):
    structure, base = results["fd_base"]
    fd = results["fd_energies"]
    volume = abs(np.linalg.det(structure.lattice.matrix))
    for kind, i, j, _ in [k for k in fd if k[3] == 1]:
        de = (fd[(kind, i, j, 1)] - fd[(kind, i, j, -1)]) / (2 * FD_STEP)
        if kind == "f":
            assert abs(-de - base["f"][i, j]) < 1e-6, (i, j, -de, base["f"][i, j])
        else:
            assert abs(de / volume * EV_A3_TO_GPA - base["s"][i, j]) < 1e-5, (i, j, de, base["s"][i, j])


def test_conversion_reproduces_shipped_checkpoint(tmp_path, sevennet):
    importlib.import_module("sevenn")
    import sevenn
    import sevenn.util

    from lycb_jax.models.checkpoint import checkpoint_dir
    from lycb_jax.models.convert_sevennet import PRETRAINED, convert_pretrained

    fresh = lycb_jax.load_model(convert_pretrained("sevennet-0", tmp_path / "ck"))
    assert fresh.module.config == sevennet.module.config
    for a, b in zip(jax.tree.leaves(sevennet.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    n_torch = sum(p.numel() for p in sevenn.util.load_checkpoint("7net-0").build_model().parameters())
    n_ours = sum(np.size(x) for x in jax.tree.leaves(sevennet.params["sevennet"]))
    assert n_ours == n_torch - 2 * 89 - 5  # sevenn's shift and scale (ours: atom_ref, atom_scale) and denominators
    manifest = json.loads((checkpoint_dir() / "sevennet-0" / "manifest.json").read_text())
    src = Path(sevenn.__file__).parent / PRETRAINED["sevennet-0"][1]
    assert manifest["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "MIT" in manifest["licence"] and manifest["source_package"] == "sevenn"


@pytest.mark.slow
def test_calculator_and_md_take_sevennet(tmp_path, sevennet):
    """The ASE calculator gives predict's numbers in ASE units; a few NVT steps of the MD driver run;
    an element SevenNet-0 does not know gives a NaN energy (no silent number)."""
    import h5py
    from cells import lyc_like, rattled

    from lycb_jax.md import Protocol, Simulation

    structure = rattled(lyc_like((2, 1, 1), seed=60), 0.1, seed=60)
    pred = lycb_jax.predict(sevennet, [structure])[0]
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = lycb_jax.Calculator(sevennet)
    assert atoms.get_potential_energy() == pytest.approx(pred.energy, abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), pred.forces, atol=1e-9)
    symmetric = (pred.stress + pred.stress.T) / 2  # ASE's Voigt form keeps the symmetric part
    np.testing.assert_allclose(atoms.get_stress(voigt=False) * EV_A3_TO_GPA, symmetric, atol=1e-7)
    assert np.all(np.isfinite(pred.forces)) and np.abs(pred.forces).max() > 0.1
    po = structure.copy()
    po.replace(0, "Po")  # not among SevenNet-0's 89 elements: refused by name, not a NaN energy
    from lycb_jax.io.errors import InputError

    with pytest.raises(InputError, match="does not know element.*Po"):
        lycb_jax.predict(sevennet, [po])

    proto = Protocol(temperatures_K=(300.0,), dt_fs=1.0, start_K=300.0, heat_ps=0.0, nvt_ps=0.0,
                     production_ps=0.01, save_every_fs=5.0, chunk_ps=0.01, checkpoint_every_ps=0.01, skin=0.5)
    Simulation(sevennet, atoms, proto, tmp_path / "md", progress=False).run()
    with h5py.File(tmp_path / "md" / "trajectory.h5") as f:
        pos, epot = f["production"]["positions"][:], f["production"]["potential_energy"][:]
    assert pos.shape[:2] == (1, 2) and np.all(np.isfinite(pos)) and np.all(np.isfinite(epot))
    assert np.abs(pos[0, 1] - pos[0, 0]).max() > 1e-3  # the atoms moved
    assert abs(epot[0, 0] - pred.energy) < 1.0  # eV: the same potential (the cell was not changed)


@pytest.mark.slow
def test_one_finetune_epoch_on_pbe_labels(sevennet):
    """One epoch on GPAW-PBE labels: all SevenNet layers train by default, the shift and scale stay."""
    from lycb_jax import train as ft

    data = ft.read_dataset(Path(__file__).parents[1] / "data" / "lycb_gpaw.extxyz").subset(range(8))
    cfg = ft.FinetuneConfig(parent="sevennet-0", epochs=1, batch_size=4, learning_rate=1e-4, scheduler="constant",
                            val_fraction=0.0, test_fraction=0.0, restore_best=False, refit_composition=False,
                            evaluate_initial=False)
    res = ft.finetune(data, cfg, out=False, verbose=False)
    assert np.isfinite(res.history[-1]["train_loss"])
    before, after = sevennet.params, res.model.params
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["sevennet"]),
                                                        jax.tree.leaves(after["sevennet"])))
    for k in ("atom_ref", "atom_scale"):
        np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]))


def test_elements_sevennet_was_not_trained_on_are_refused():
    """SevenNet-0 has no Po..Ra (Z = 84..88; its one-hot table lists 89 elements): a structure with Rn is
    refused by name before any evaluation (the model would return NaN), while CHGNet takes it."""
    from ase.build import bulk

    from lycb_jax import predict
    from lycb_jax.io.errors import InputError

    atoms = bulk("Rn", "fcc", a=6.5)
    with pytest.raises(InputError, match="sevennet-0 does not know element.*Rn"):
        predict(lycb_jax.load_model("sevennet-0"), [atoms])
    assert np.isfinite(predict(lycb_jax.load_model("chgnet-0.3.0"), [atoms])[0].energy)
