"""Li-ion transport analysis: MSD, diffusion coefficients, Arrhenius and Nernst-Einstein (paper Eq. 1-4).

Units: positions and cells in Angstrom, time in fs, temperatures in K, diffusion coefficients in
cm^2/s, activation energies in eV, conductivities in mS/cm.

Modules (one concept each):

* ``wrapping``: detect wrapped coordinates, unwrap by integer cell images (per-frame cells: NpT scheme).
* ``msd``: FFT time-origin-averaged tracer and collective MSD (Eq. 1), atom selection and the one
  drift-removal rule (mass-weighted framework centre of mass when masses are known), the
  random-walk MSD covariance model.
* ``stats``: weighted least-squares line (Arrhenius) and generalised least squares (Einstein fit).
* ``window``: the diffusive regime (fit window) or a not-converged verdict with its reason.
* ``diffusion``: Einstein fit D = slope / 6 (Eq. 2) by GLS with the MSD covariance, collective D,
  Haven ratio, ``Diffusion`` results, Nernst-Einstein conductivity (Eq. 4).
* ``arrhenius``: weighted Arrhenius fit of ln D vs 1/T (Eq. 3), extrapolation of D and sigma.
* ``trajectory``: inputs (arrays, ASE files, the MD's trajectory.h5), the default hop length, one-call analyses.
* ``report``: summary dict, JSON/CSV tables, MSD, Arrhenius and thermodynamics plots.
"""

from lycb_jax.analysis.arrhenius import Arrhenius, arrhenius_fit, conductivity_at, extrapolate
from lycb_jax.analysis.diffusion import (
    A2_PER_FS_TO_CM2_PER_S,
    DEFAULT_HOP_DISTANCE,
    Diffusion,
    diffusion_coefficient,
    diffusion_from_streaming,
    fit_einstein,
    nernst_einstein,
)
from lycb_jax.analysis.msd import MSD, displacement_moments, msd_covariance_model, msd_fft, species_masks
from lycb_jax.analysis.report import (json_safe, plot_arrhenius, plot_msd, plot_thermo, summarize, write_report,
                                      write_summary)
from lycb_jax.analysis.stats import GLSLine, LineFit, gls_line, wls_line
from lycb_jax.analysis.trajectory import (
    MDTrajectory,
    Trajectory,
    analyse_md,
    analyze_trajectory,
    read_md_trajectory,
    replica_groups,
    trajectory_from_arrays,
    trajectory_from_file,
)
from lycb_jax.analysis.wrapping import check_unwrapped, unwrap, unwrap_npt, wrap_jumps
from lycb_jax.analysis.window import (Window, check_production, find_window, min_converging_D, min_frames, slope_test,
                                      window_end)

__all__ = [
    "A2_PER_FS_TO_CM2_PER_S", "DEFAULT_HOP_DISTANCE", "MSD", "Arrhenius", "Diffusion",
    "LineFit", "MDTrajectory", "Trajectory", "analyse_md", "analyze_trajectory", "arrhenius_fit",
    "check_unwrapped", "conductivity_at", "diffusion_coefficient", "diffusion_from_streaming", "extrapolate", "find_window", "gls_line",
    "GLSLine", "min_frames", "check_production", "min_converging_D", "msd_covariance_model", "displacement_moments", "slope_test", "Window",
    "fit_einstein", "msd_fft", "nernst_einstein", "plot_arrhenius", "plot_msd", "plot_thermo", "read_md_trajectory",
    "replica_groups", "species_masks", "summarize", "trajectory_from_arrays", "trajectory_from_file", "unwrap", "window_end",
    "wls_line", "wrap_jumps", "write_report", "write_summary", "json_safe", "unwrap_npt",
]
