"""Transport summary (Arrhenius fit + extrapolated conductivity) as a dict, JSON/CSV tables and plots.

Units in the summary: T in K, D in cm^2/s, sigma in mS/cm, Ea in eV, time in fs, volume in A^3.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lycb_jax.analysis.arrhenius import arrhenius_fit, conductivity_at, extrapolate
from lycb_jax.analysis.diffusion import A2_PER_FS_TO_CM2_PER_S
from lycb_jax.units import KB


def summarize(results, t_extrapolate=300.0, charge=1.0):
    """Arrhenius fit and conductivity at ``t_extrapolate`` (K) from ``Diffusion`` results (one per T).

    Needs temperature and volume_A3 set on each result.  Returns a JSON-able dict.
    """
    temps = np.array([r.temperature for r in results], float)
    fit = arrhenius_fit(temps, [r.D for r in results], [r.D_err for r in results])
    vol = float(np.mean([r.volume_A3 for r in results]))
    s, s_err = conductivity_at(fit, results[0].n_mobile, vol, t_extrapolate, charge)
    d_x, d_x_err, _ = extrapolate(fit, t_extrapolate)
    rows = [dict(T=r.temperature, D=r.D, D_err=r.D_err, D_collective=r.D_collective,
                 D_collective_err=r.D_collective_err, haven_ratio=r.haven_ratio, sigma=r.sigma,
                 sigma_err=r.sigma_err, t0_fs=r.window_fs[0], t1_fs=r.window_fs[1],
                 hops_per_ion=r.hops_per_ion, n_mobile=r.n_mobile, volume_A3=r.volume_A3) for r in results]
    return dict(units=dict(T="K", D="cm^2/s", sigma="mS/cm", Ea="eV", time="fs", volume="A^3"),
                per_temperature=rows, Ea=float(fit.Ea), Ea_err=float(fit.Ea_err), D0=float(fit.D0),
                D0_err=float(fit.D0_err), cov_lnD0_Ea=np.asarray(fit.cov).tolist(), chi2_red=float(fit.chi2_red),
                T_extrapolate=t_extrapolate, D_extrapolated=float(d_x), D_extrapolated_err=float(d_x_err),
                sigma_extrapolated=float(s), sigma_extrapolated_err=float(s_err))


def json_safe(obj, path: str = ""):
    """``obj`` with every NaN/inf number replaced by None and a note ``"<key>_null_reason"`` beside it,
    so that the JSON is valid and says why a value is missing (numpy scalars and arrays become lists)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k] = json_safe(v, f"{path}.{k}")
            if out[k] is None and v is not None:
                out[f"{k}_null_reason"] = "not computable (non-finite: too few valid points, or a fit that failed)"
        return out
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, path) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), path)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_summary(summary, outdir, stem="transport"):
    """Write ``summary`` (from ``summarize``) as JSON and a per-temperature CSV; returns the paths.

    The CSV has one row per T with the global Ea, Ea_err and sigma at T_extrapolate repeated.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pj, pc = out / f"{stem}.json", out / f"{stem}.csv"
    pj.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    glob = {k: summary[k] for k in ("Ea", "Ea_err", "D0", "D0_err", "T_extrapolate",
                                    "sigma_extrapolated", "sigma_extrapolated_err")}
    rows = [{**r, **glob} for r in summary["per_temperature"]]
    with pc.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return pj, pc


def write_report(results, outdir):
    """``summarize`` the results, write the tables and both plots into ``outdir``; returns the summary."""
    summary = summarize(results)
    write_summary(summary, outdir)
    plot_msd(results, outdir)
    plot_arrhenius(summary, outdir)
    return summary


def _pyplot(outdir):
    """matplotlib.pyplot on the Agg backend, with ``outdir`` created."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(outdir).mkdir(parents=True, exist_ok=True)
    return plt


def _save(fig, out, stem):
    paths = [Path(out) / f"{stem}.{ext}" for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def plot_msd(results, outdir, stem="msd"):
    """Tracer MSD (A^2) vs time (ps) per temperature (log-log) with the fit window and line; PNG + SVG."""
    plt = _pyplot(outdir)
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results:
        t = r.time_fs[1:] / 1000.0
        (line,) = ax.loglog(t, r.msd[1:], lw=0.8, label=f"{r.temperature:g} K" if r.temperature else None)
        i0, i1 = (int(round(v / r.dt_fs)) for v in r.window_fs)
        ax.loglog(t[i0 - 1 : i1], r.msd[i0 : i1 + 1], lw=4, alpha=0.35, color=line.get_color())
        tw = np.geomspace(max(r.window_fs[0], r.dt_fs), r.window_fs[1], 50)
        ax.loglog(tw / 1000.0, 6 * r.D / A2_PER_FS_TO_CM2_PER_S * tw + r.intercept, "--", lw=1, color="k")
    ax.set_xlabel("t (ps)")
    ax.set_ylabel(r"MSD ($\AA^2$)")
    ax.set_title("MSD; thick: fit window, dashed: Einstein fit", fontsize=9)
    if any(r.temperature for r in results):
        ax.legend(fontsize=7)
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths


def plot_arrhenius(summary, outdir, stem="arrhenius"):
    """D (cm^2/s) vs 1000/T with errors, the Arrhenius fit and the extrapolation to T_extrapolate; PNG + SVG."""
    plt = _pyplot(outdir)
    rows = summary["per_temperature"]
    x = np.array([1000.0 / r["T"] for r in rows])
    d, de = np.array([r["D"] for r in rows]), np.array([r["D_err"] for r in rows])
    tx = summary["T_extrapolate"]
    xs = np.linspace(min(x.min(), 1000.0 / tx), max(x.max(), 1000.0 / tx), 100)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(x, d, yerr=de, fmt="o", label="MD")
    ax.semilogy(xs, summary["D0"] * np.exp(-summary["Ea"] / (KB * 1000.0) * xs), "--",
                label=f"Ea = {summary['Ea']:.3f} $\\pm$ {summary['Ea_err']:.3f} eV")
    ax.errorbar([1000.0 / tx], [summary["D_extrapolated"]], yerr=[summary["D_extrapolated_err"]], fmt="s",
                label=f"{tx:g} K: $\\sigma$ = {summary['sigma_extrapolated']:.3g} $\\pm$ "
                      f"{summary['sigma_extrapolated_err']:.2g} mS/cm")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel(r"D (cm$^2$/s)")
    ax.legend(fontsize=7)
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths
