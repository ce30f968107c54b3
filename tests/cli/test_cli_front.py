"""The front door: `lycb-jax --help` builds every subcommand's parser without importing JAX (so it answers
at once), --version prints the package version, option help shows defaults, a model prints in one line."""

import subprocess
import sys

import lycb_jax


def test_help_imports_no_jax():
    code = ("import sys, lycb_jax.cli as c; c.build_parser(); "
            "heavy = sorted(m for m in ('jax', 'flax', 'e3nn_jax', 'jax_md', 'torch') if m in sys.modules); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_version_and_defaults_in_help(capsys):
    from lycb_jax.cli import main

    for argv in (["--version"], ["sweep", "--help"]):
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines by the terminal's width
    assert f"lycb-jax {lycb_jax.__version__}" in out
    # MD commands default to the fine-tuned model with D3 (the density of experiment, docs/results.md)
    assert "(default: sweep_out)" in out and "(default: chgnet-0.3.0-lycb-pbe-d3)" in out and "(default: None)" not in out


def test_model_prints_in_one_line():
    text = repr(lycb_jax.load_model("chgnet-0.3.0"))
    assert "\n" not in text and "name='chgnet-0.3.0'" in text and "CHGNet" in text and len(text) < 200


def test_models_lists_every_checkpoint_with_its_errors(capsys):
    import json

    from lycb_jax.cli import main
    from lycb_jax.models.paths import checkpoint_dir

    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if not line.startswith("(")}
    assert {"chgnet-0.3.0", "chgnet-0.3.0-lycb-pbe", "sevennet-0", "sevennet-0-lycb-pbe"} <= set(lines)
    ft = json.loads((checkpoint_dir() / "chgnet-0.3.0-lycb-pbe" / "manifest.json").read_text())
    f_mae = ft["training_data"]["heldout_mae"]["fine-tuned"]["force_mae_meV/A"]
    assert f"F {f_mae:.0f} meV/A" in lines["chgnet-0.3.0-lycb-pbe"] and "pretrained" in lines["chgnet-0.3.0"]


def test_sensitivity_reweights_with_the_model_the_trajectory_records(tmp_path):
    import json

    import h5py
    import pytest

    from lycb_jax.cli.sensitivity import recorded_model

    old, new = tmp_path / "old.h5", tmp_path / "new.h5"
    h5py.File(old, "w").close()  # written before the model was recorded
    disp = {"method": "D3", "damping": "bj", "functional": "pbe"}
    with h5py.File(new, "w") as f:
        f.attrs["model_name"] = "chgnet-0.3.0-lycb-pbe+d3bj"
        f.attrs["model_dispersion"] = json.dumps(disp)
    assert recorded_model(old, None, None) == ("chgnet-0.3.0", None)
    assert recorded_model(new, None, None) == ("chgnet-0.3.0-lycb-pbe", "d3bj:pbe")
    assert recorded_model(new, "chgnet-0.3.0-lycb-pbe", "d3bj") == ("chgnet-0.3.0-lycb-pbe", "d3bj:pbe")
    for model, dispersion in (("chgnet-0.3.0", None), (None, "d3bj:pbesol")):
        with pytest.raises(SystemExit, match="reweighting needs the same model"):
            recorded_model(new, model, dispersion)


def test_every_command_has_an_example_that_parses():
    """Each subcommand's --help ends with an example; every example parses with the real parser, and the input
    files it names (structures, labels, configs) exist in the source tree."""
    import shlex
    from pathlib import Path

    from lycb_jax.cli import EXAMPLES, build_parser

    parser = build_parser()
    root = Path(__file__).resolve().parents[2]
    commands = parser._subparsers._group_actions[0].choices
    assert set(EXAMPLES) == set(commands)
    for name, line in EXAMPLES.items():
        argv = shlex.split(line)[1:]
        assert argv[0] == name and commands[name].epilog == f"example: {line}"
        parser.parse_args(argv)  # SystemExit on any unknown option or bad value
        for word in argv:
            if word.endswith((".cif", ".extxyz", ".toml")):
                assert (root / word).exists(), word


def test_study_picks_its_protocol_by_the_device(monkeypatch):
    """`lycb-jax study` without --config: the cpu protocol where JAX sees no GPU, the gpu one where it
    does, each with its reason; an explicit --config is kept. The named files are the shipped configs/."""
    import jax

    from lycb_jax.cli.md import choose_protocol
    from lycb_jax.md import Protocol

    assert choose_protocol("paper") == ("paper", "protocol: paper (--config)")
    name, why = choose_protocol("auto")
    assert jax.default_backend() == "cpu" and name == "cpu" and "JAX sees no GPU" in why
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    name, why = choose_protocol("auto")
    assert name == "gpu" and "JAX sees a GPU" in why
    gpu, cpu = Protocol.load("gpu"), Protocol.load("cpu")
    assert gpu.temperatures_K == (600.0, 675.0, 750.0, 825.0) and gpu.production_ps == 100.0 and gpu.npt_ps == 20.0
    assert cpu.temperatures_K == (300.0, 800.0) and cpu.npt_ps > 0 and cpu.barostat == "iso"


def test_experimental_volume_of_the_shipped_measured_structures():
    """The study compares its NpT volume with the measured structure of the same composition: Schlem 2021
    as published (21.93 and 26.75 A^3/atom, benchmarks/reproduction/reference.json); none for LYCB x = 3."""
    import json
    from pathlib import Path

    from ase.io import read

    from lycb_jax.io.structures import experimental_volume

    root = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduction"
    ref = json.loads((root / "reference.json").read_text())
    for name in ("LYC0", "LYB0"):
        value, source = experimental_volume(read(root / "structures" / f"{name}.cif").numbers)
        assert round(value, 2) == ref[name]["volume_A3_per_atom"]["value"] and source == "Schlem 2021"
    assert experimental_volume(read(root / "structures" / "LYCB_x3.0_C2.cif").numbers) is None


def test_readme_commands_are_the_ones_ci_runs():
    """README's two set-up commands sit in closed code blocks, and `.ci/run` runs the README's test command
    word for word (the README is what a newcomer types)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert readme.count("```") % 2 == 0, "README.md has an unclosed code block"
    blocks = readme.split("```")[1::2]
    main_job = next(b for b in blocks if "lycb-jax study" in b)
    assert main_job.strip().splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/lycb-jax study --out study_out"]
    tests = next(b for b in blocks if "pytest" in b)
    readme_cmd = " ".join(tests.replace("\\\n", " ").split())
    ci_cmd = " ".join((root / ".ci" / "run").read_text().strip().splitlines()[-1].split())
    assert ci_cmd == readme_cmd
