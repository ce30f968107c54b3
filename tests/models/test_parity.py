"""Parity with the PyTorch CHGNet 0.3.0 (the `chgnet` package) on 35 structures.

Two checks: (1) float64 against float64, which tests the port itself to ~1e-8 (no float32
round-off in the way); (2) float32 against float32 with tolerances of 2-4x the README's figures. Where the
PyTorch float32 result is itself further than the tolerance from its own float64 result
(strongly rattled cells), that measured error of the reference is added to the allowance,
and our float32 result must still be within the tolerance of the exact (float64) CHGNet.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lycb_jax
from cells import parity_set

# About 2-4x the largest differences measured on the 35 (seeded) structures, README "Parity": float32 against the
# exact (float64) CHGNet 9.5e-7 eV/atom, 3.7e-5 eV/A, 3.4e-5 GPa, 5.1e-7 muB; float64 against float64 3.3e-7 eV/atom
# (AtomRef is float32 in chgnet, `.float()`), 4.7e-9 eV/A, 2.4e-8 GPa, 1.4e-9 muB.
TOL32 = {"e": 2e-6, "f": 1e-4, "s": 1e-4, "m": 1.5e-6}  # eV/atom, eV/A, GPa, muB
TOL64 = {"e": 1e-6, "f": 2e-8, "s": 1e-7, "m": 5e-9}
# padded edges and angles per predict call: ~0.7 GB of XLA temporaries in float64 on the CPU instead of ~3 GB
BUDGET = {"max_edges_per_batch": 8192, "max_angles_per_batch": 8192}
pytestmark = pytest.mark.xdist_group("torch_chgnet_parity")  # one worker computes the references


def _as_dict(p):
    if isinstance(p, dict):  # chgnet's prediction
        return {k: np.asarray(p[k], np.float64) for k in "efsm"}
    return {"e": p.energy_per_atom, "f": p.forces, "s": p.stress, "m": p.magmoms}


def _diff(a, b):
    a, b = _as_dict(a), _as_dict(b)
    return {k: float(np.abs(a[k] - b[k]).max()) for k in "efsm"}


@pytest.fixture(scope="module")
def results(model, torch_model):
    import chgnet.graph.converter as converter
    import chgnet.model.model as chgnet_model
    import torch
    from chgnet.model import CHGNet

    structs = parity_set()
    ours32 = lycb_jax.predict(model, list(structs.values()), **BUDGET)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP threads spin on a loaded 2-core machine (the sevenn fixture measured ~10x)
    # chgnet's own batching (one graph per batch): 3x faster than one call per structure on 2 cores; batches of 4,
    # not 16: the float64 reference then peaks at 3.0 GB instead of 6.8 GB, in the same time
    ref32 = torch_model.predict_structure(list(structs.values()), task="efsm", batch_size=4)
    with jax.enable_x64(True):
        model64 = dataclasses.replace(model, params=jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), model.params))
        ours64 = lycb_jax.predict(model64, list(structs.values()), **BUDGET)
    old = converter.TORCH_DTYPE, chgnet_model.TORCH_DTYPE
    converter.TORCH_DTYPE = chgnet_model.TORCH_DTYPE = torch.float64
    try:
        torch64 = CHGNet.load(model_name="0.3.0", verbose=False).double()
        torch64.composition_model.float()  # chgnet casts the composition features with .float()
        ref64 = torch64.predict_structure(list(structs.values()), task="efsm", batch_size=4)
    finally:
        converter.TORCH_DTYPE, chgnet_model.TORCH_DTYPE = old
        torch.set_num_threads(threads)
    return list(structs), ours32, ref32, ours64, ref64


def _worst(names, a, b):
    worst = {}
    for name, x, y in zip(names, a, b):
        for k, v in _diff(x, y).items():
            if v >= worst.get(k, (-1, ""))[0]:
                worst[k] = (v, name)
    return worst


@pytest.mark.slow
def test_float64_port_equals_pytorch_float64(results):
    names, _, _, ours64, ref64 = results
    assert len(names) >= 30
    worst = _worst(names, ours64, ref64)
    print("\nfloat64 jax vs float64 torch, largest |diff|:", worst)
    for k, (v, name) in worst.items():
        assert v <= TOL64[k], f"{k}: {v:.3g} > {TOL64[k]} on {name}"


def test_float32_parity_with_pytorch_float32(results):
    names, ours32, ref32, _, ref64 = results
    print("\nfloat32 jax vs float32 torch, largest |diff|:", _worst(names, ours32, ref32))
    print("float32 torch vs float64 torch (reference's own round-off):", _worst(names, ref32, ref64))
    print("float32 jax vs float64 torch:", _worst(names, ours32, ref64))
    for name, o32, r32, r64 in zip(names, ours32, ref32, ref64):
        d, own, exact = _diff(o32, r32), _diff(r32, r64), _diff(o32, r64)
        for k in TOL32:
            assert exact[k] <= TOL32[k], f"{name} {k}: float32 result {exact[k]:.3g} from exact CHGNet"
            assert d[k] <= TOL32[k] + own[k], f"{name} {k}: {d[k]:.3g} > {TOL32[k]} + torch's own {own[k]:.3g}"


def test_outputs_are_not_trivial(results):
    """Guard against a parity pass on degenerate outputs: forces, stresses, moments non-zero."""
    _, ours32, _, _, _ = results
    assert max(np.abs(o.forces).max() for o in ours32) > 1.0
    assert max(np.abs(o.stress).max() for o in ours32) > 1.0
    assert max(o.magmoms.max() for o in ours32) > 0.5  # Ni, Co, Fe carry moments
