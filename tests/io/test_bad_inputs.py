"""Bad input is refused at the door: every kind below goes through a real entry point (the `lycb-jax`
command line in-process, the library's ``predict`` / ``Calculator`` / ``finetune``, or a subprocess) and
must end in one line naming the problem; on the command line ``error: ...`` on stderr and exit code 2,
never a traceback. Refusals come before any JAX compilation, so the whole table runs in seconds.

``python benchmarks/bad_input_table.py`` runs the same table and writes docs/bad_inputs.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTIAL_CIF = ROOT / "lycb_jax" / "data" / "Li3YCl6_P-3m1_Schlem2021.cif"  # partially occupied Li sites
ORDERED_CIF = ROOT / "lycb_jax" / "data" / "Li3YCl6_P-3m1_ordered30.cif"
CHGNET = ROOT / "checkpoints" / "chgnet-0.3.0"


def xyz(
    tmp: Path, name: str, species, positions, lattice="5 0 0 0 5 0 0 0 5", pbc="T T T", extra="", columns=""
) -> str:
    """Write one extxyz frame; returns its path."""
    lines = [str(len(species)), f'Lattice="{lattice}" Properties=species:S:1:pos:R:3{columns} {extra} pbc="{pbc}"']
    lines += [f"{s} {' '.join(map(str, p))}" for s, p in zip(species, positions)]
    (tmp / name).write_text("\n".join(lines) + "\n")
    return str(tmp / name)


def text(tmp: Path, name: str, content: str) -> str:
    (tmp / name).write_text(content)
    return str(tmp / name)


LICL = (["Li", "Cl"], [[0, 0, 0], [2.5, 2.5, 2.5]])


def dummy_cif(tmp: Path) -> str:
    return text(
        tmp,
        "dummy.cif",
        "data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\n_atom_site_occupancy\nXx1 Xx 0 0 0 1\nCl1 Cl 0.5 0.5 0.5 1\n",
    )


def poscar(tmp: Path, name: str, lattice: str, coords: str) -> str:
    return text(tmp, name, f"LiCl\n1.0\n{lattice}\nLi Cl\n1 1\nCartesian\n{coords}\n")


def checkpoint_copy(tmp: Path, edit: Callable[[dict], None] | None = None, params: bytes | None = None) -> str:
    """A copy of the shipped CHGNet checkpoint with its manifest edited / params replaced."""
    out = tmp / "ckpt"
    out.mkdir()
    manifest = json.loads((CHGNET / "manifest.json").read_text())
    if edit:
        edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    if params is None:
        shutil.copy(CHGNET / "params.msgpack", out / "params.msgpack")
    else:
        (out / "params.msgpack").write_bytes(params)
    return str(out)


def toml(tmp: Path, body: str, name: str = "bad.toml") -> str:
    return text(tmp, name, body + "\n")


def unlabelled(tmp: Path) -> str:
    return xyz(tmp, "nolabels.extxyz", *LICL)


@dataclasses.dataclass
class Case:
    """One bad input: ``make(tmp)`` returns argv for ``lycb-jax`` (a list) or a callable (a library
    entry point); ``expect`` is a regex the one-line message must match."""

    kind: str
    make: Callable[[Path], list | Callable]
    expect: str


def _finetune_api(atoms_edit):
    def make(tmp):
        from ase import Atoms

        atoms = Atoms("LiCl", positions=LICL[1], cell=np.eye(3) * 5, pbc=True)
        atoms.info["energy"] = -7.0
        atoms_edit(atoms)

        def call():
            from lycb_jax.train import finetune

            finetune([atoms] * 4, out=tmp / "ft")

        return call

    return make


def _calculator_on_ase_read_partial_cif(tmp):
    import ase.io

    atoms = ase.io.read(PARTIAL_CIF)  # ASE fills the partial sites with whole atoms (35 atoms)

    def call():
        import lycb_jax

        atoms.calc = lycb_jax.Calculator()
        atoms.get_potential_energy()

    return call


def _predict_dummy_pymatgen(tmp):
    from pymatgen.core import DummySpecies, Lattice, Structure

    s = Structure(Lattice.cubic(5), [DummySpecies("X"), "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])

    def call():
        import lycb_jax

        lycb_jax.predict(lycb_jax.load_model(), [s])

    return call


CASES = [
    # ---- structure files (predict; md, study, sweep and active-learn read them the same way)
    Case("missing structure file", lambda t: ["predict", str(t / "nope.cif")], r"nope\.cif'?: no such file"),
    Case("a folder instead of a file", lambda t: ["predict", str(t)], r"cannot read structure file .*: not a file"),
    Case(
        "empty file",
        lambda t: ["predict", text(t, "empty.xyz", "")],
        r"cannot read structure file .*empty\.xyz': the file is empty",
    ),
    Case(
        "text that is no structure",
        lambda t: ["predict", text(t, "junk.cif", "not a crystal\n")],
        r"cannot read structure file .*junk\.cif': no crystal structure found: a CIF needs a data_ block",
    ),
    Case(
        "CIF with partially occupied sites (the shipped Schlem 2021 LYC)",
        lambda t: ["predict", str(PARTIAL_CIF)],
        r"Schlem2021\.cif: partially occupied sites .*lycb-jax structures",
    ),
    Case(
        "CIF with a dummy species 'Xx'",
        lambda t: ["predict", dummy_cif(t)],
        r"dummy\.cif: unknown or dummy species 'Xx0\+'",
    ),
    Case(
        "extxyz with a dummy atom 'X' (Z = 0)",
        lambda t: ["predict", xyz(t, "x.extxyz", ["X", "Cl"], LICL[1])],
        r"x\.extxyz: unknown or dummy species 'X' \(Z = 0\)",
    ),
    Case(
        "extxyz with no atoms", lambda t: ["predict", xyz(t, "none.extxyz", [], [])], r"none\.extxyz: empty structure"
    ),
    Case(
        "extxyz with overlapping atoms",
        lambda t: ["predict", xyz(t, "ov.extxyz", ["Li", "Cl"], [[0, 0, 0], [0.1, 0, 0]])],
        r"ov\.extxyz: overlapping atoms: atom 0 \(Li\) and atom 1 \(Cl\) are 0\.100 A apart",
    ),
    Case(
        "POSCAR with atoms overlapping across the periodic boundary",
        lambda t: ["predict", poscar(t, "POSCAR_ov", "5 0 0\n0 5 0\n0 0 5", "0 0 0\n4.8 0 0")],
        r"POSCAR_ov: overlapping atoms: atom 0 \(Li\) and atom 1 \(Cl\) are 0\.200 A apart",
    ),
    Case(
        "extxyz with a NaN position",
        lambda t: ["predict", xyz(t, "nan.extxyz", ["Li", "Cl"], [[0, 0, 0], ["nan", 0, 0]])],
        r"nan\.extxyz: positions of atom\(s\) \[1\] are NaN or inf",
    ),
    Case(
        "POSCAR with an inf lattice vector",
        lambda t: ["predict", poscar(t, "POSCAR_inf", "inf 0 0\n0 5 0\n0 0 5", "0 0 0\n2.5 2.5 2.5")],
        r"POSCAR_inf: cell contains NaN or inf",
    ),
    Case(
        "xyz without a cell (a molecule)",
        lambda t: ["predict", text(t, "mol.xyz", "2\n\nLi 0 0 0\nCl 2.1 0 0\n")],
        r"mol\.xyz: not periodic",
    ),
    Case(
        "extxyz with pbc = F F F",
        lambda t: ["predict", xyz(t, "nopbc.extxyz", *LICL, pbc="F F F")],
        r"nopbc\.extxyz: not periodic",
    ),
    Case(
        "extxyz with a zero-volume (flat) cell",
        lambda t: ["predict", xyz(t, "flat.extxyz", *LICL, lattice="5 0 0 0 5 0 5 5 0")],
        r"flat\.extxyz: singular cell",
    ),
    Case(
        "extxyz with a cell far too small for its atoms",
        lambda t: [
            "predict",
            xyz(t, "tiny.extxyz", ["Li", "Li"], [[0, 0, 0], [0.6, 0.6, 0.6]], lattice="1.2 0 0 0 1.2 0 0 0 1.2"),
        ],
        r"tiny\.extxyz: volume per atom 0\.864 A\^3 is unphysically small",
    ),
    Case(
        "second frame of a trajectory broken",
        lambda t: ["predict", _two_frames(t)],
        r"two\.extxyz@1: overlapping atoms",
    ),
    Case(
        "ASE Atoms read from a partially occupied CIF, given to the Calculator",
        _calculator_on_ase_read_partial_cif,
        r"partially occupied sites \(Li:0\.62462, Li:0\.87538.*ASE fills them with whole atoms",
    ),
    Case(
        "pymatgen Structure with a DummySpecies, given to predict()",
        _predict_dummy_pymatgen,
        r"unknown or dummy species 'X0\+'",
    ),
    # ---- MD / study / sweep settings
    Case(
        "--config file missing",
        lambda t: ["md", str(ORDERED_CIF), "--config", str(t / "none.toml")],
        r"config file '.*none\.toml' not found",
    ),
    Case(
        "config key without its unit (dt)",
        lambda t: ["study", "--config", toml(t, "dt = 2.0")],
        r"unknown setting 'dt' for Protocol; did you mean 'dt_fs'\?",
    ),
    Case(
        "config key misspelt (temperature_K)",
        lambda t: ["sweep", str(ORDERED_CIF), "--config", toml(t, "temperature_K = [600.0]")],
        r"unknown setting 'temperature_K' for Protocol; did you mean 'temperatures_K'\?",
    ),
    Case(
        "config value with units in a string",
        lambda t: ["md", str(ORDERED_CIF), "--config", toml(t, 'dt_fs = "2 fs"')],
        r"setting 'dt_fs' must be a number in fs \(the unit is in the key name\), got '2 fs'",
    ),
    Case(
        "negative production time",
        lambda t: ["md", str(ORDERED_CIF), "--config", toml(t, "production_ps = -4.0")],
        r"setting 'production_ps' must be >= 0 ps, got -4\.0",
    ),
    Case(
        "temperature of 0 K in the config",
        lambda t: ["study", "--config", toml(t, "temperatures_K = [0.0, 700.0]")],
        r"setting 'temperatures_K' must be > 0 K, got 0\.0",
    ),
    Case(
        "negative temperature on the command line",
        lambda t: ["md", str(ORDERED_CIF), "-T", "-300"],
        r"command line: setting 'temperatures_K' must be > 0 K, got -300\.0",
    ),
    Case(
        "--max-replicas 0",
        lambda t: ["md", str(ORDERED_CIF), "-T", "600", "--max-replicas", "0", "--out", str(t / "md")],
        r"max_replicas must be a positive integer, got 0",
    ),
    Case(
        "time step of 0 fs",
        lambda t: ["md", str(ORDERED_CIF), "--config", toml(t, "dt_fs = 0.0")],
        r"setting 'dt_fs' must be > 0 fs, got 0\.0",
    ),
    Case(
        "temperatures not a list",
        lambda t: ["study", "--config", toml(t, "temperatures_K = 700.0")],
        r"setting 'temperatures_K' must be a list, e\.g\. \[600\.0, 700\.0\]",
    ),
    Case(
        "config that is not valid TOML",
        lambda t: ["md", str(ORDERED_CIF), "--config", toml(t, "dt_fs = = 2")],
        r"bad\.toml: not valid TOML",
    ),
    Case(
        "JSON config that is a list, not a mapping",
        lambda t: ["md", str(ORDERED_CIF), "--config", text(t, "list.json", "[1, 2]")],
        r"list\.json: expected a mapping of settings, got list",
    ),
    # ---- fine-tuning data and settings
    Case(
        "fine-tuning data without labels",
        lambda t: ["finetune", unlabelled(t), "--out", str(t / "ft")],
        r"no energy or force labels in .*nolabels\.extxyz: nothing to fit",
    ),
    Case(
        "fine-tuning data where one frame has no labels",
        lambda t: ["finetune", _half_labelled(t)],
        r"1 of 2 structures have neither energy nor forces \(.*mixed\.extxyz@1\)",
    ),
    Case(
        "fine-tuning data file missing",
        lambda t: ["finetune", str(t / "none.extxyz")],
        r"cannot read data file '.*none\.extxyz': no such file",
    ),
    Case(
        "fine-tuning data with a stress of 4 numbers",
        lambda t: ["finetune", xyz(t, "s4.extxyz", *LICL, extra='energy=-7.0 stress="1 2 3 4"')],
        r"cannot read data file '.*s4\.extxyz' with ase\.io \(Got info item stress",
    ),
    Case(
        "fine-tuning forces of shape (N, 2) (library)",
        _finetune_api(lambda a: a.info.update(forces=np.zeros((2, 2)))),
        r"forces label has shape \(2, 2\), expected \(2, 3\)",
    ),
    Case(
        "fine-tuning stress of shape (4,) (library)",
        _finetune_api(lambda a: a.info.update(stress=np.zeros(4))),
        r"stress label has shape \(4,\), expected Voigt \(6,\) or \(3, 3\)",
    ),
    Case(
        "fine-tuning config key misspelt",
        lambda t: ["finetune", unlabelled(t), "--config", text(t, "ft.json", '{"learning_rat": 0.001}')],
        r"ft\.json: unknown setting 'learning_rat' for FinetuneConfig; did you mean 'learning_rate'\?",
    ),
    Case(
        "fine-tuning config with negative epochs",
        lambda t: ["finetune", unlabelled(t), "--config", text(t, "ft.yaml", "epochs: -1\n")],
        r"ft\.yaml: setting 'epochs' must be > 0, got -1",
    ),
    Case(
        "fine-tuning flag --batch-size 0",
        lambda t: ["finetune", unlabelled(t), "--batch-size", "0"],
        r"command line: setting 'batch_size' must be > 0, got 0",
    ),
    Case(
        "YAML config that would run code (python tag)",
        lambda t: [
            "finetune",
            unlabelled(t),
            "--config",
            text(t, "evil.yaml", '!!python/object/apply:os.system ["echo pwned"]\n'),
        ],
        r"evil\.yaml: not valid YAML",
    ),
    # ---- active learning settings
    Case(
        "active-learn config key misspelt",
        lambda t: ["active-learn", str(ORDERED_CIF), "--config", text(t, "al.json", '{"t_star_K": 300}')],
        r"unknown setting 't_star_K' for ActiveLearningConfig; did you mean 't_start_K'\?",
    ),
    Case(
        "active-learn negative start temperature",
        lambda t: ["active-learn", str(ORDERED_CIF), "--t-start", "-5"],
        r"command line: setting 't_start_K' must be > 0 K",
    ),
    Case(
        "active-learn fine-tuning overrides misspelt",
        lambda t: ["active-learn", str(ORDERED_CIF), "--config", text(t, "al.json", '{"finetune": {"epoch": 3}}')],
        r"\[finetune\]: unknown setting 'epoch' for FinetuneConfig; did you mean 'epochs'\?",
    ),
    Case(
        "active-learn config with an MD key from before the [md] table",
        lambda t: ["active-learn", str(ORDERED_CIF), "--config", text(t, "al.toml", "md_dt_fs = 2.0\n")],
        r"al\.toml: setting 'md_dt_fs' of ActiveLearningConfig is now 'dt_fs' in the \[md\] table",
    ),
    Case(
        "active-learn MD setting misspelt",
        lambda t: ["active-learn", str(ORDERED_CIF), "--config", text(t, "al.toml", "[md]\nheat_sp = 1.0\n")],
        r"al\.toml: \[md\]: unknown setting 'heat_sp' for Protocol; did you mean 'heat_ps'\?",
    ),
    Case(
        "active-learn MD temperatures (the loop sets them)",
        lambda t: ["active-learn", str(ORDERED_CIF), "--config", text(t, "al.json", '{"md": {"temperatures_K": [300]}}')],
        r"al\.json: \[md\] temperatures_K is set by the loop: use t_start_K, t_max_K and dt_K",
    ),
    # ---- checkpoints (--model)
    Case(
        "unknown checkpoint name",
        lambda t: ["predict", str(ORDERED_CIF), "--model", "chgnet-9.9"],
        r"no checkpoint 'chgnet-9\.9'",
    ),
    Case(
        "checkpoint of an unknown architecture",
        lambda t: ["predict", str(ORDERED_CIF), "--model", checkpoint_copy(t, lambda m: m.update(architecture="mace"))],
        r"unknown architecture 'mace'",
    ),
    Case(
        "checkpoint config with a key the architecture lacks",
        lambda t: ["predict", str(ORDERED_CIF), "--model", checkpoint_copy(t, lambda m: m["config"].update(depth=9))],
        r"config keys \['depth'\] are not chgnet settings",
    ),
    Case(
        "checkpoint whose params do not fit its config",
        lambda t: [
            "predict",
            str(ORDERED_CIF),
            "--model",
            checkpoint_copy(t, lambda m: m["config"].update(feature_dim=32)),
        ],
        r"parameter chgnet/atom_embedding/embedding has shape \(94, 64\), but the manifest's config implies \(94, 32\)",
    ),
    Case(
        "checkpoint with a truncated params file",
        lambda t: [
            "predict",
            str(ORDERED_CIF),
            "--model",
            checkpoint_copy(t, params=(CHGNET / "params.msgpack").read_bytes()[:1000]),
        ],
        r"(cannot load|checksum|sha256|corrupt|truncated)",
    ),
    Case(
        "checkpoint params with one flipped bit (manifest checksum)",
        lambda t: ["predict", str(ORDERED_CIF), "--model", _flipped_bit(t)],
        r"params\.msgpack does not match the checksum in manifest\.json",
    ),
    Case(
        "checkpoint without manifest.json",
        lambda t: ["predict", str(ORDERED_CIF), "--model", _no_manifest(t)],
        r"manifest\.json missing or unreadable",
    ),
]


def _two_frames(tmp: Path) -> str:
    a = Path(xyz(tmp, "a.extxyz", *LICL)).read_text()
    b = Path(xyz(tmp, "b.extxyz", ["Li", "Cl"], [[0, 0, 0], [0.2, 0, 0]])).read_text()
    return text(tmp, "two.extxyz", a + b)


def _half_labelled(tmp: Path) -> str:
    a = Path(xyz(tmp, "a.extxyz", *LICL, extra="energy=-7.0")).read_text()
    b = Path(xyz(tmp, "b.extxyz", *LICL)).read_text()
    return text(tmp, "mixed.extxyz", a + b)


def _flipped_bit(tmp: Path) -> str:
    import hashlib

    data = bytearray((CHGNET / "params.msgpack").read_bytes())
    sha = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 1
    return checkpoint_copy(tmp, lambda m: m.update(params_sha256=sha), params=bytes(data))


def _no_manifest(tmp: Path) -> str:
    path = Path(checkpoint_copy(tmp))
    (path / "manifest.json").unlink()
    return str(path)


def run_case(case: Case, tmp: Path) -> tuple[str, str]:
    """(outcome, message): outcome "exit 2" (CLI), "refused" (library: InputError / ValueError /
    FileNotFoundError), or what happened instead."""
    from lycb_jax.cli import main

    entry = case.make(tmp)
    if callable(entry):
        try:
            entry()
        except (ValueError, FileNotFoundError) as err:
            return "refused", str(err)
        return "accepted", ""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(entry)
        except SystemExit as exit_:
            code = exit_.code
    return f"exit {code}", err.getvalue().strip()


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv("LYCB_JAX_CACHE", "off")  # no cache folder written by these refusals


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_refused_with_one_line(case, tmp_path):
    outcome, message = run_case(case, tmp_path)
    if outcome.startswith("exit"):
        assert outcome == "exit 2", f"{case.kind}: {outcome}, stderr {message!r}"
        assert message.startswith("error: ") and "\n" not in message, message
        assert "Traceback" not in message
    else:
        assert outcome == "refused", f"{case.kind}: {outcome}"
        assert "\n" not in message, message
    assert re.search(case.expect, message), f"{case.kind}: {message!r} does not match {case.expect!r}"


def test_table_has_25_kinds():
    assert len({c.kind for c in CASES}) >= 25


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["predict", str(PARTIAL_CIF)], "partially occupied sites"),
        (["study", "--config", "no/such/config.toml"], "config file 'no/such/config.toml' not found"),
    ],
)
def test_subprocess_exit_code_2_without_traceback(argv, expect, tmp_path):
    env = dict(os.environ, LYCB_JAX_CACHE="off")
    res = subprocess.run(
        [sys.executable, "-m", "lycb_jax", *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and expect in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


def test_unexpected_error_keeps_its_traceback(monkeypatch):
    """A bug is not dressed up as bad input: a RuntimeError in a command propagates (traceback, exit 1)."""
    import lycb_jax.cli.predict as cli_predict
    from lycb_jax.cli import main

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_predict, "cmd_predict", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["predict", str(ORDERED_CIF)])
