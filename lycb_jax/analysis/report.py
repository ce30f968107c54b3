"""Transport summary (Arrhenius fit + extrapolated conductivity) as a dict, JSON/CSV tables and plots.

Units in the summary: T in K, D in cm^2/s, sigma in mS/cm, Ea in eV, time in fs, volume in A^3.
Values that were not computed (a temperature that did not converge, a refused Arrhenius fit) are
None (null in JSON) next to the reason, never NaN.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lycb_jax.analysis.arrhenius import arrhenius_fit, conductivity_at, extrapolate
from lycb_jax.analysis.diffusion import A2_PER_FS_TO_CM2_PER_S
from lycb_jax.units import KB


def _num(v):
    """float, or None when missing or not finite (NaN never reaches the report)."""
    return None if v is None or not np.isfinite(v) else float(v)


def _row(r):
    return dict(T=r.temperature, converged=r.converged, reason=r.reason, D=_num(r.D), D_err=_num(r.D_err),
                D_err_ols=_num(r.D_err_ols), t0_fs=r.window_fs[0] if r.window_fs else None,
                t1_fs=r.window_fs[1] if r.window_fs else None, window_source=r.window_source, note=r.note,
                hops_per_ion=_num(r.hops_per_ion), hop_distance_A=r.hop_distance, D_collective=_num(r.D_collective),
                D_collective_err=_num(r.D_collective_err), collective_converged=r.collective_converged,
                haven_ratio=_num(r.haven_ratio), haven_ratio_err=_num(r.haven_ratio_err), sigma=_num(r.sigma),
                sigma_err=_num(r.sigma_err), sigma_source=r.sigma_source, sigma_collective=_num(r.sigma_collective),
                sigma_collective_err=_num(r.sigma_collective_err), chi2_red=_num(r.chi2_red),
                variance_scale=_num(r.variance_scale), n_mobile=r.n_mobile, n_frames=r.n_frames, dt_fs=r.dt_fs,
                volume_A3=r.volume_A3)


TWO_POINT_NOTE = ("Arrhenius line through 2 temperatures only: no test of linearity, and the error comes from the "
                  "two D errors alone")


def _arrhenius_line(temps, d, d_err, *, n_mobile, volume_A3, t_extrapolate, charge, what):
    """Arrhenius fit of one set of converged D (cm^2/s) and its Nernst-Einstein sigma at ``t_extrapolate``
    (K): a dict of Ea, D0, sigma_extrapolated ... with errors, or the refusal (< 2 temperatures)."""
    line = dict(converged_T=[float(t) for t in temps], n_points=len(temps), refused=None, note=None)
    if len(temps) < 2:
        line["refused"] = (f"fewer than two temperatures with a converged {what} D ({len(temps)}): no Arrhenius fit, "
                           f"no extrapolation to {t_extrapolate:g} K")
        return line
    temps = np.asarray(temps, float)
    fit = arrhenius_fit(temps, d, d_err)
    d_x, d_x_err, _ = extrapolate(fit, t_extrapolate)
    s, s_err = conductivity_at(fit, n_mobile, volume_A3, temperature=t_extrapolate, charge=charge)
    line.update(Ea=_num(fit.Ea), Ea_err=_num(fit.Ea_err), D0=_num(fit.D0), D0_err=_num(fit.D0_err),
                cov_lnD0_Ea=np.asarray(fit.cov, float).tolist(), chi2_red=_num(fit.chi2_red),
                arrhenius_line=dict(x="1000/T (1/K)", y="ln D (cm^2/s)", x_mean=float(fit.x_mean),
                                    y_mean=float(fit.y_mean), slope=float(-fit.Ea / (KB * 1000.0)),
                                    var_y_mean=float(fit.var_y_mean), var_slope=float(fit.var_slope)),
                D_extrapolated=_num(d_x), D_extrapolated_err=_num(d_x_err), sigma_extrapolated=_num(s),
                sigma_extrapolated_err=_num(s_err),
                note=TWO_POINT_NOTE if len(temps) == 2 else None)
    return line


def summarize(results, t_extrapolate=300.0, charge=1.0):
    """Per-temperature table and two Arrhenius lines, each over its own converged temperatures, never
    mixed: the tracer D (top-level ``Ea``, ``sigma_extrapolated`` ...: Nernst-Einstein with H_R = 1) and
    the collective (charge) D (``collective``: its own Ea and sigma at ``t_extrapolate``, K). A line needs
    two converged temperatures (else ``arrhenius_refused`` / ``collective.refused`` says why); a line
    through exactly two says so in ``arrhenius_note``. ``haven_ratio_used``: the weighted mean H_R where
    both D converged (information only). Returns a JSON-able dict."""
    rows = [_row(r) for r in results]
    used = [r for r in results if r.converged and np.isfinite(r.D) and r.D > 0 and r.D_err > 0]
    coll = [r for r in results if r.collective_converged and r.D_collective > 0 and r.D_collective_err > 0]
    out = dict(units=dict(T="K", D="cm^2/s", sigma="mS/cm", Ea="eV", time="fs", volume="A^3"),
               per_temperature=rows, converged_T=[float(r.temperature) for r in used],
               not_converged={f"{r.temperature:g} K": r.reason for r in results if not r.converged},
               T_extrapolate=t_extrapolate)
    common = dict(t_extrapolate=t_extrapolate, charge=charge)
    ref = used or coll
    vol = lambda rs: float(np.mean([r.volume_A3 for r in rs])) if rs else None  # noqa: E731
    n_mobile = ref[0].n_mobile if ref else 0
    tracer = _arrhenius_line([r.temperature for r in used], [r.D for r in used], [r.D_err for r in used],
                             n_mobile=n_mobile, volume_A3=vol(used), what="tracer", **common)
    keys = ("Ea", "Ea_err", "D0", "D0_err", "cov_lnD0_Ea", "chi2_red", "arrhenius_line", "D_extrapolated",
            "D_extrapolated_err", "sigma_extrapolated", "sigma_extrapolated_err")
    out.update({k: tracer.get(k) for k in keys}, arrhenius_refused=tracer["refused"], arrhenius_note=tracer["note"],
               sigma_extrapolated_source=None if tracer["refused"] else
               "Nernst-Einstein from the Arrhenius-extrapolated tracer D with H_R = 1")
    out["collective"] = _arrhenius_line([r.temperature for r in coll], [r.D_collective for r in coll],
                                        [r.D_collective_err for r in coll], n_mobile=n_mobile, volume_A3=vol(coll),
                                        what="collective (charge)", **common)
    hr = [(r.haven_ratio, r.haven_ratio_err) for r in used if r.collective_converged and r.haven_ratio_err > 0]
    out["haven_ratio_used"] = None
    if hr:  # mean of ln H_R (errors are relative); information only, applied to no conductivity
        h, he = np.array(hr).T
        w = (h / he) ** 2
        h_mean = float(np.exp(np.sum(w * np.log(h)) / w.sum()))
        out["haven_ratio_used"] = dict(value=h_mean, err=float(h_mean / np.sqrt(w.sum())), n_temperatures=len(hr))
    return out


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

    The CSV has one row per T with the global Ea, Ea_err and sigma at T_extrapolate repeated (empty
    when not computed: see ``arrhenius_refused`` and each row's ``reason`` in the JSON).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pj, pc = out / f"{stem}.json", out / f"{stem}.csv"
    pj.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    glob = {k: summary.get(k) for k in ("Ea", "Ea_err", "D0", "D0_err", "T_extrapolate", "sigma_extrapolated",
                                        "sigma_extrapolated_err")}
    rows = [{**r, **glob} for r in json_safe(summary)["per_temperature"]]
    with pc.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
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
    """Tracer MSD (A^2) vs time (ps) per temperature (log-log): fitted window shaded with the GLS line,
    non-converged temperatures dotted and labelled; below, the window test's local slope with its
    error band and the target 1.  PNG + SVG."""
    plt = _pyplot(outdir)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
    for r in results:
        t = r.time_fs[1:] / 1000.0
        name = f"{r.temperature:g} K" if r.temperature else "MSD"
        label = name if r.converged else f"{name}: not converged"
        (line,) = ax.loglog(t, r.msd[1:], lw=0.9, ls="-" if r.converged else ":", label=label)
        c = line.get_color()
        if r.converged:
            t0, t1 = r.window_fs
            ax.axvspan(t0 / 1000.0, t1 / 1000.0, color=c, alpha=0.12)
            tw = np.geomspace(t0, t1, 50)
            ax.loglog(tw / 1000.0, 6 * r.D / A2_PER_FS_TO_CM2_PER_S * tw + r.intercept, "--", lw=1, color="k")
        ok = np.isfinite(r.slope)
        ax2.errorbar(r.slope_grid_fs[ok] / 1000.0, r.slope[ok], yerr=np.minimum(r.slope_err[ok], 2), fmt=".",
                     ms=3, lw=0.6, color=c)
    hop2 = results[0].hop_distance ** 2
    ax.axhline(hop2, color="0.5", lw=0.6, ls="-.")
    ax.text(ax.get_xlim()[0], hop2, f" one hop$^2$ = ({results[0].hop_distance:.3g} $\\AA$)$^2$", fontsize=7,
            va="bottom", color="0.4")
    latest = [r.slope_grid_fs[-1] / 1000.0 for r in results if len(r.slope_grid_fs)]
    if latest:  # a window must start by here (enough independent time origins after it) and above hop^2
        for a in (ax, ax2):
            a.axvline(max(latest), color="0.5", lw=0.6, ls="--")
        ax.text(max(latest), 0.02, "latest window start ", transform=ax.get_xaxis_transform(), fontsize=7,
                ha="right", va="bottom", color="0.4")
    ax.set_ylabel(r"MSD ($\AA^2$)")
    keys = (["shaded: fitted window; dashed: GLS Einstein fit"] if any(r.converged for r in results) else []) + \
        (["dotted: not converged"] if not all(r.converged for r in results) else [])
    ax.set_title("; ".join(keys + ["a window starts above hop$^2$, before the dashed line"]), fontsize=7)
    ax.legend(fontsize=7)
    ax2.axhline(1.0, color="k", lw=0.6)
    ax2.set_ylim(-0.5, 2.5)
    ax2.set_ylabel("local slope\n(cage offset removed)", fontsize=8)
    ax2.set_xlabel("t (ps)")
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths


def _plot_line(ax, line, conv_x, tx, color, label):
    """One Arrhenius line (dict of ``_arrhenius_line``) with its 1-sigma band to 1000/tx and the point at tx."""
    xs = np.linspace(min(conv_x), 1000.0 / tx, 100)
    ln_d = line["y_mean"] + line["slope"] * (xs - line["x_mean"])
    ln_err = np.sqrt(line["var_y_mean"] + (xs - line["x_mean"]) ** 2 * line["var_slope"])
    ax.plot(xs, np.exp(ln_d), "--", color=color, label=label)
    ax.fill_between(xs, np.exp(ln_d - ln_err), np.exp(ln_d + ln_err), color=color, alpha=0.15)


def plot_arrhenius(summary, outdir, stem="arrhenius"):
    """D (cm^2/s) vs 1000/T: the tracer D and, where it converged, the collective (charge) D, each with its
    own Arrhenius fit, 1-sigma band and extrapolated sigma at T_extrapolate (a line through 2 points says
    so); non-converged temperatures marked, refusals stated.  PNG + SVG."""
    plt = _pyplot(outdir)
    rows = summary["per_temperature"]
    tx = summary["T_extrapolate"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.set_yscale("log")
    notes = []
    coll = summary.get("collective") or {}
    sets = [("tracer", "C0", "o", [r for r in rows if r["converged"] and r["D"] is not None], "D", summary,
             summary.get("arrhenius_refused")),
            ("collective", "C1", "s", [r for r in rows if r["collective_converged"] and r["D_collective"]],
             "D_collective", coll, coll.get("refused"))]
    for what, color, marker, conv, key, line, refused in sets:
        if conv:
            x = [1000.0 / r["T"] for r in conv]
            ax.errorbar(x, [r[key] for r in conv], yerr=[r[key + "_err"] for r in conv], fmt=marker, color=color,
                        label=f"{what} D (converged)")
        if line.get("arrhenius_line"):
            two = " [2 points]" if line.get("n_points", len(conv)) == 2 else ""
            _plot_line(ax, line["arrhenius_line"], x, tx, color,
                       f"{what}: Ea = {line['Ea']:.3f} $\\pm$ {line['Ea_err']:.3f} eV{two}; $\\sigma$({tx:g} K) = "
                       f"{line['sigma_extrapolated']:.3g} $\\pm$ {line['sigma_extrapolated_err']:.2g} mS/cm")
            ax.errorbar([1000.0 / tx], [line["D_extrapolated"]], yerr=[line["D_extrapolated_err"]], fmt=marker,
                        mfc="none", color=color)
            if two:
                notes.append(f"{what}: line through 2 temperatures only (no linearity test)")
        elif refused:
            notes.append(f"{what}: {refused}")
    for k, r in enumerate(r for r in rows if not r["converged"]):  # labels staggered: neighbours do not overlap
        ax.axvline(1000.0 / r["T"], color="r", lw=0.8, ls=":")
        ax.text(1000.0 / r["T"], 0.02 + 0.07 * (k % 2), f" {r['T']:g} K\n not conv.", transform=ax.get_xaxis_transform(),
                fontsize=6, color="r")
    if not any(r["converged"] or r["collective_converged"] for r in rows):  # nothing to draw: say so, no D axis
        ax.set_yscale("linear")
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no temperature converged:\nno diffusion coefficient, no Arrhenius fit", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
    if notes:
        ax.set_title("\n".join(notes), fontsize=6, wrap=True)
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel(r"D (cm$^2$/s)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    paths = _save(fig, outdir, stem)
    plt.close(fig)
    return paths


STAGE_NAMES = {"heat": "heat", "nvt": "NVT", "npt": "NpT", "production": "production (NVT)"}


def plot_thermo(h5_path, out) -> Path:
    """``out``/thermo.png: temperature (K), pressure (GPa) and volume (A^3) of every replica against time
    (ps) through the stages of an MD trajectory.h5, each stage named above its span."""
    from lycb_jax.md.trajectory import read_trajectory
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    with read_trajectory(h5_path) as f:
        t0 = 0.0
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs.get("structure_names", [])]
        several = len(set(names)) > 1  # a sweep: the legend names the structure of each replica
        for k, stage in enumerate([s for s in ("heat", "nvt", "npt", "production") if s in f]):
            t = (f[stage]["time_fs"][:] + t0) / 1000
            for r, temp in enumerate(f.attrs["temperatures_K"]):
                label = (f"{names[r]} " if several else "") + f"{temp:.0f} K"
                kw = dict(color=f"C{r}", lw=0.8, label=label if k == 0 else None)
                axes[0].plot(t, f[stage]["temperature"][r], **kw)
                axes[1].plot(t, f[stage]["pressure"][r] / 1e4, **kw)
                axes[2].plot(t, f[stage]["volume"][r], **kw)
            for ax in axes:
                ax.axvline(t[-1], color="0.7", lw=0.5)
            axes[0].text((t0 / 1000 + t[-1]) / 2, 1.01 + 0.06 * (k % 2), STAGE_NAMES.get(stage, stage), ha="center", va="bottom",
                         fontsize=7, color="0.3", transform=axes[0].get_xaxis_transform())
            t0 += f[stage]["time_fs"][-1]
    axes[0].set_ylabel("T (K)")
    axes[1].set_ylabel("P (GPa)")
    axes[2].set_ylabel("V (A$^3$)")
    axes[2].set_xlabel("time (ps)")
    axes[0].legend(fontsize=7, ncol=4)
    path = Path(out) / "thermo.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
