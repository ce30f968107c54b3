"""Weight conversion, the ASE calculator and the CLI."""

import importlib
import hashlib
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import lycb_jax
from lycb_jax.models.checkpoint import checkpoint_dir
from lycb_jax.models.convert_chgnet import convert_pretrained
from cells import lyc_trigonal, rattled


def test_conversion_reproduces_shipped_checkpoint(tmp_path):
    chgnet = importlib.import_module("chgnet")
    out = convert_pretrained("chgnet-0.3.0", tmp_path / "ck")
    shipped = lycb_jax.load_model("chgnet-0.3.0")
    fresh = lycb_jax.load_model(out)
    for a, b in zip(jax.tree.leaves(shipped.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sum(np.size(x) for x in jax.tree.leaves(shipped.params["chgnet"])) == 412525 - 94
    manifest = json.loads((checkpoint_dir() / "chgnet-0.3.0" / "manifest.json").read_text())
    src = Path(chgnet.__file__).parent / manifest["source_file"]
    assert manifest["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "BSD" in manifest["licence"]


def test_ase_calculator_matches_chgnet_calculator():
    importlib.import_module("chgnet")
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(rattled(lyc_trigonal(7), 0.1, seed=7))
    atoms.calc = lycb_jax.Calculator()
    ours = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), atoms.get_magnetic_moments()
    atoms.calc = CHGNetCalculator(use_device="cpu")
    ref = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(), atoms.get_magnetic_moments()
    assert abs(ours[0] - ref[0]) < 2e-5 * len(atoms)
    np.testing.assert_allclose(ours[1], ref[1], atol=2e-4)
    np.testing.assert_allclose(ours[2], ref[2], atol=5e-3 / 160.2)  # eV/A^3, Voigt
    np.testing.assert_allclose(ours[3], ref[3], atol=1e-4)


def test_cli_predict_writes_json(tmp_path, capsys):
    from lycb_jax.cli import main

    s = lyc_trigonal(8)
    s.to(filename=str(tmp_path / "lyc.cif"))
    out = tmp_path / "pred.json"
    assert main(["predict", str(tmp_path / "lyc.cif"), "-o", str(out)]) == 0
    rec = json.loads(out.read_text())[0]
    ref = lycb_jax.predict(lycb_jax.load_model(), [s])[0]
    assert rec["n_atoms"] == 30 and abs(rec["energy_eV"] - ref.energy) < 1e-3
    assert "eV/atom" in capsys.readouterr().out


def test_cli_unreadable_file_is_named(tmp_path, capsys):
    from lycb_jax.cli import main

    bad = tmp_path / "junk.cif"
    bad.write_text("this is not a structure\n")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(bad)])
    assert exit_.value.code == 2
    assert f"error: cannot read structure file {str(bad)!r}" in capsys.readouterr().err


def test_finetune_default_output_is_in_the_working_directory(tmp_path, monkeypatch, model):
    """Without ``out`` a fine-tuned checkpoint goes to ./finetune_out/<parent>-ft-<sha> of the working
    directory, never next to the package (checked at set-up, before any compilation)."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from lycb_jax.train import Dataset, FinetuneConfig
    from lycb_jax.train.loop import _setup

    images = []
    for k in range(4):
        atoms = bulk("NaCl", "rocksalt", 5.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=-27.0 - 0.1 * k, forces=np.zeros((8, 3)))
        images.append(atoms)
    ds = Dataset.from_atoms(images)
    monkeypatch.chdir(tmp_path)
    cfg = FinetuneConfig().with_freeze_resolved(model.module.layer_groups().default_frozen)
    run = _setup(ds, cfg, model, None, False)
    assert run.path.parent.resolve() == (tmp_path / "finetune_out").resolve()
    assert run.path.name == f"chgnet-0.3.0-ft-{ds.sha256()[:8]}"
    assert Path(lycb_jax.__file__).parents[1].resolve() not in run.path.resolve().parents
