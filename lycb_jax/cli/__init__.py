"""The `lycb-jax` command line: argparse here only; each subcommand calls library functions.

No module of the library imports this package."""

from __future__ import annotations

import argparse
import os
import sys

SUBCOMMAND_MODULES = ("lycb_jax.cli.predict", "lycb_jax.cli.md", "lycb_jax.cli.structures", "lycb_jax.cli.finetune",
                      "lycb_jax.cli.active", "lycb_jax.cli.analyze", "lycb_jax.cli.sensitivity",
                      "lycb_jax.cli.models")  # each defines add_cli(subparsers)


def add_model_argument(p, help: str = "checkpoint name or folder", default: str | None = None) -> None:
    """``--model NAME_OR_DIR``, the same in every command (default the shipped CHGNet 0.3.0, or ``default``)."""
    from lycb_jax.models.paths import DEFAULT_MODEL, shipped_checkpoints

    p.add_argument("--model", default=default or DEFAULT_MODEL, help=f"{help}; shipped: {', '.join(shipped_checkpoints())}")


def add_dispersion_argument(p, where: str = "") -> None:
    """``--dispersion d3bj[:FUNCTIONAL]``: add D3(BJ) dispersion to the model (default none); ``where``
    says where it acts, if not everywhere."""
    p.add_argument("--dispersion", metavar="d3bj[:FUNCTIONAL]",
                   help="add Grimme D3(BJ) dispersion to the model's energy, forces and stress (functional: the "
                        "model's, default PBE; pbe, pbesol, r2scan, revpbe)" + (f"; {where}" if where else ""))


class _DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to options that have a default (not None or False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _SubcommandParser(argparse.ArgumentParser):
    """Subcommand parsers show each option's default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


S = "benchmarks/reproduction/structures"  # the ordered 480-atom cells shipped with the source
EXAMPLES = {  # one runnable line per command, shown under its --help
    "study": f"lycb-jax study --structure {S}/LYB0.cif -T 675 750 825 --config gpu --out study_out",
    "sweep": f"lycb-jax sweep {S}/LYC0.cif {S}/LYB0.cif -T 600 700 --config gpu --out sweep_out",
    "md": f"lycb-jax md {S}/LYC0.cif -T 600 700 --config gpu --model chgnet-0.3.0-lycb-pbe --out md_out",
    "analyze": "lycb-jax analyze sweep_out/md/trajectory.h5 --out report",
    "predict": f"lycb-jax predict {S}/LYC0.cif {S}/LYB0.cif --model chgnet-0.3.0-lycb-pbe-d3",
    "structures": "lycb-jax structures --parent LYC --supercell 1 1 2 --top 3 --out lyc_models",
    "finetune": "lycb-jax finetune benchmarks/active_learning/labelled_LYC30_r0.extxyz --parent chgnet-0.3.0 "
                "--epochs 20 --out my_model",
    "active-learn": "lycb-jax active-learn benchmarks/active_learning/LYC30.cif benchmarks/active_learning/LYB20.cif "
                    "--model chgnet-0.3.0-lycb-pbe --dispersion d3bj --out active_out",
    "sensitivity": "lycb-jax sensitivity md_out/trajectory.h5 --stage npt",
    "models": "lycb-jax models",
    "convert": "lycb-jax convert --name chgnet-0.3.0 --out checkpoints/chgnet-0.3.0",
}


def build_parser() -> argparse.ArgumentParser:
    from lycb_jax import __version__

    parser = argparse.ArgumentParser(
        prog="lycb-jax", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Li-ion transport in halide solid electrolytes: from a crystal structure to D, Ea and the ionic "
                    "conductivity\n(CHGNet in JAX, batched NVT/NpT MD, diffusion analysis with uncertainties).",
        epilog="example: lycb-jax study (the main job: picks the cpu or gpu protocol by the device JAX sees)\n"
               "lycb-jax COMMAND --help for each command's options.")
    parser.add_argument("--version", action="version", version=f"lycb-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)
    import importlib

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    for name, command in sub.choices.items():
        command.epilog = f"example: {EXAMPLES[name]}"
    return parser


MULTI_PROCESS_COMMANDS = ("md", "study", "sweep")  # options --coordinator, --num-processes, --process-id


def _join_processes(argv) -> None:
    """md / study / sweep: join a multi-process run if asked (lycb_jax.runtime.distributed.initialize). It
    must come before the subcommands are imported: importing jax_md already starts JAX."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in MULTI_PROCESS_COMMANDS or {"-h", "--help"} & set(argv):
        return
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--coordinator")
    pre.add_argument("--num-processes", type=int)
    pre.add_argument("--process-id", type=int)
    known, _ = pre.parse_known_args(argv[1:])
    from lycb_jax.runtime import distributed

    try:
        distributed.initialize(known.coordinator, known.num_processes, known.process_id)
    except ValueError as err:
        raise SystemExit(f"error: {err}")


def expected_errors() -> tuple:
    """Errors that mean bad input or a bad environment, not a bug: :class:`lycb_jax.io.InputError` (every
    refusal of the validation layer), missing/unwritable files and other OS errors (full disk, read-only
    folder)."""
    from lycb_jax.io import InputError

    return InputError, OSError


def main(argv=None) -> int:
    """Run one command. An expected error (:func:`expected_errors`, or a command's ``SystemExit("error:
    ...")``) prints one line ``error: ...`` on stderr and exits with code 2, like argparse's usage
    errors; anything else is a bug and keeps its traceback."""
    try:
        _join_processes(argv)
        args = build_parser().parse_args(argv)
        if os.environ.get("LYCB_JAX_CACHE", "").lower() != "off":
            from lycb_jax.runtime.cache import enable_compilation_cache

            enable_compilation_cache()
        return args.func(args) or 0
    except expected_errors() as err:
        message = str(err) or type(err).__name__
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):  # argparse (code 2), --help (0), or a command's own code
            raise
        message = exit_.code.removeprefix("error: ")
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
