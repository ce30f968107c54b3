"""The README's Results table against the committed run summaries (benchmarks/results/reproduction/summary.json,
written by benchmarks/reproduction/collect.py from the GPU run folders): every Ea and sigma(300 K) printed there
is the committed value at the printed precision, and the temperature range is the converged one."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Results"):].split("\n\n")[0]
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].startswith(("LYC", "LYB")):
            continue
        yield cells


def _match(label, summary):
    m = re.match(r"(LYC0|LYB0|LYCB x = ([\d.]+)), (\+ D3\(BJ\)|no dispersion), (1 bar|10 kbar)", label)
    assert m, f"README Results row not understood: {label!r}"
    name = m.group(1) if m.group(2) is None else f"LYCB_x{float(m.group(2)):.1f}_C2"
    d3 = m.group(3).startswith("+")
    p = 1.0 if m.group(4) == "1 bar" else 1e4
    hits = [r for r in summary if r["structure"] == name and bool(r["dispersion"]) == d3 and r["pressure_bar"] == p]
    assert len(hits) == 1, f"{label}: {len(hits)} committed runs match"
    return hits[0]


def _same(printed: str, value: float) -> bool:
    """``printed`` is ``value`` rounded to the digits shown."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10 ** -decimals + 1e-12


def test_readme_results_are_the_committed_runs():
    summary = json.loads((ROOT / "benchmarks/results/reproduction/summary.json").read_text())
    rows = list(_rows())
    assert len(rows) >= 8
    for label, ea, sigma, _volume in rows:
        run = _match(label, summary)
        ea_value, ea_err, t_range = re.match(r"([\d.]+) \+- ([\d.]+) \((.*)\)", ea).groups()
        assert _same(ea_value, run["Ea"]) and _same(ea_err, run["Ea_err"]), (label, ea, run["Ea"], run["Ea_err"])
        s_value, s_err = re.match(r"([\d.]+) \+- ([\d.]+)", sigma).groups()
        assert _same(s_value, run["sigma300"]) and _same(s_err, run["sigma300_err"]), (label, sigma, run["sigma300"])
        temps = [int(t) for t in run["converged_T"]]
        shown = [int(t) for t in re.findall(r"\d+", t_range)]
        assert shown == temps or shown == [temps[0], temps[-1]], (label, t_range, temps)
        assert ("only" in t_range) == (len(temps) == 2), (label, t_range)
