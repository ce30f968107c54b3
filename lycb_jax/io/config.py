"""Settings files (TOML, JSON, YAML) for md / study / sweep / finetune / active-learn, checked against
the dataclass they fill: unknown keys (with the closest known key), wrong types, non-positive times,
temperatures and time steps. Units are in the key names: ``_K`` kelvin, ``_fs`` femtoseconds,
``_ps`` picoseconds, ``_bar`` bar.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
from pathlib import Path

from lycb_jax.io.errors import InputError

# fields that must be > 0 / >= 0 besides the unit rules (suffix _K and _fs: > 0, _ps: >= 0)
POSITIVE = {"chunk_ps", "checkpoint_every_ps", "epochs", "batch_size", "learning_rate", "per_iteration", "skin",
            "max_temperature_factor", "huber_delta", "max_buckets", "patience", "drift_bound_meV"}
NON_NEGATIVE = {"weight_decay", "decay_fraction", "energy_weight", "force_weight", "stress_weight", "magmom_weight",
                "seed"}
FRACTIONS = {"val_fraction", "test_fraction"}  # in [0, 1)


NAMED_PROTOCOLS = ("cpu", "gpu", "paper")  # MD protocols shipped as configs/NAME.toml (see protocol_path)


def protocol_path(name_or_path: str | Path) -> Path:
    """The file of a named protocol (``cpu``, ``gpu``, ``paper``): ``configs/NAME.toml`` of the source tree
    (a checkout or an editable install), else the copy an installed wheel carries
    (``<prefix>/share/lycb_jax/configs``; the same rule as the checkpoints); any other value is a path."""
    if str(name_or_path) not in NAMED_PROTOCOLS:
        return Path(name_or_path)
    import sys

    source = Path(__file__).resolve().parents[2] / "configs"
    installed = Path(sys.prefix) / "share" / "lycb_jax" / "configs"
    return (source if source.is_dir() or not installed.is_dir() else installed) / f"{name_or_path}.toml"


def read_config(path: str | Path) -> dict:
    """The mapping in a TOML (.toml), YAML (.yaml/.yml) or JSON file; InputError naming the file if it is
    missing or does not parse. YAML is read with ``yaml.safe_load`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} {'not found' if not path.exists() else 'is not a file'}")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:  # tomllib / yaml / json errors, UnicodeDecodeError: all mean "cannot parse"
        kind = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(path.suffix, "JSON")
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not valid {kind} ({first}); write key = value settings "
                         "(the .toml/.yaml/.yml/.json suffix picks the format)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def check_settings(data: dict, cls, source: str) -> dict:
    """``data`` checked against the fields of dataclass ``cls``: no unknown keys (the closest field is
    suggested; a key that moved, listed in ``cls.MOVED_KEYS`` as old -> "table.key", is named at its new
    place), values of the field's type, and unit rules (times, temperatures, time steps). Returns
    ``data``; InputError naming ``source`` (the file, or "command line") otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    moved = getattr(cls, "MOVED_KEYS", {})
    for key in data:
        if key in moved and key not in fields:
            table, new = moved[key].rsplit(".", 1)
            raise InputError(f"{source}: setting {key!r} of {cls.__name__} is now {new!r} in the [{table}] table")
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(fields)}"
            raise InputError(f"{source}: unknown setting {key!r} for {cls.__name__}; {hint}")
    for key, value in data.items():
        t = fields[key].type
        _check_value(key, value, t if isinstance(t, str) else (t.__name__ if isinstance(t, type) else str(t)), source)
    return data


def settings_from(path: str | Path | None, cls, section: str | None = None, **overrides) -> dict:
    """Fields for ``cls`` from a settings file (optionally under ``[section]``) updated with the
    ``overrides`` that are not None (command-line flags), all checked by :func:`check_settings`."""
    data = {}
    if path:
        data = read_config(path)
        if section and isinstance(data.get(section), dict):
            data = data[section]
        check_settings(data, cls, str(path))
    flags = {k: v for k, v in overrides.items() if v is not None}
    check_settings(flags, cls, "command line")
    return {**data, **flags}


def _check_value(key: str, value, type_name: str, source: str) -> None:
    """InputError unless ``value`` fits the annotation ``type_name`` and the unit rules of ``key``."""
    where = f"{source}: setting {key!r}"
    if value is None:
        if "None" not in type_name:
            raise InputError(f"{where} must not be empty (null)")
        return
    base = type_name.split("|")[0].strip()
    if base.startswith(("tuple", "list")):
        item_type = "float" if "float" in base else ("str" if "str" in base else "")
        if not isinstance(value, (list, tuple)):
            example = '"embeddings", "atom_conv_0"' if item_type == "str" else "600.0, 700.0"
            raise InputError(f"{where} must be a list, e.g. [{example}], got {value!r}")
        items = value
        if item_type == "str" and not all(isinstance(v, str) for v in items):
            raise InputError(f"{where} must be a list of names, got {value!r}")
        if item_type == "float":
            for v in items:
                _check_number(key, v, float, where)
        if key.endswith("_K") and not items:
            raise InputError(f"{where} is empty: give at least one temperature in K")
        return
    if base in ("float", "int"):
        _check_number(key, value, float if base == "float" else int, where)
    elif base == "str" and not isinstance(value, (str, os.PathLike)):  # a name, or a path (checkpoint folder)
        raise InputError(f"{where} must be a string, got {value!r}")
    elif base == "bool" and not isinstance(value, bool):
        raise InputError(f"{where} must be true or false, got {value!r}")
    elif base == "dict" and not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping (a table of settings), got {value!r}")


def _check_number(key: str, value, kind, where: str) -> None:
    unit = {"_K": " K", "_fs": " fs", "_ps": " ps", "_bar": " bar"}.get("_" + key.rsplit("_", 1)[-1], "")
    number = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, number):
        what = "an integer" if kind is int else "a number"
        units = f" in{unit} (the unit is in the key name)" if unit else ""
        raise InputError(f"{where} must be {what}{units}, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{where} must be finite, got {value!r}")
    if (key.endswith(("_K", "_fs")) or key in POSITIVE) and value <= 0:
        raise InputError(f"{where} must be > 0{unit}, got {value!r}")
    if (key.endswith("_ps") or key in NON_NEGATIVE) and value < 0:
        raise InputError(f"{where} must be >= 0{unit}, got {value!r}")
    if key in FRACTIONS and not 0 <= value < 1:
        raise InputError(f"{where} must be in [0, 1), got {value!r}")
