"""Differentiable sensitivity studies (issue 19): how observables move with the model's parameters,
temperature and pressure.

* :mod:`.reweight`: <A>_theta and d<A>/dtheta from stored frames by reweighting (DiffTRe), with the
  effective sample size; observables potential energy, virial stress and pressure, volume, smooth RDF.
* :mod:`.fluctuations`: heat capacity, isothermal compressibility and thermal expansion from one run's
  fluctuations, with block-jackknife errors.
* :mod:`.refine`: inverse refinement of layer groups so that the reweighted NVT stress in given
  (experimental) cells reaches a target, with a DFT-label penalty.
* :mod:`.dynamics`: a checkpointed Langevin/velocity-Verlet scan for gradients of short-time MSD.

Units: eV, Angstrom, K, fs, GPa (named in each docstring).
"""

from lycb_jax.sensitivity.dynamics import (
    langevin,
    langevin_checked,
    maxwell_boltzmann,
    msd,
    msd_and_grad,
)
from lycb_jax.sensitivity.fluctuations import (
    block_jackknife,
    heat_capacity_nvt,
    npt_response,
)
from lycb_jax.sensitivity.refine import (
    RefineResult,
    StressTarget,
    dft_penalty,
    mean_stress,
    refine_stress,
    stress_target,
)
from lycb_jax.sensitivity.reweight import (
    Frames,
    Reweighted,
    cell_parameters,
    check_frames,
    effective_sample_size,
    frame_graphs,
    frame_map,
    frames_from_trajectory,
    ideal_pressure_gpa,
    merge_params,
    potential_energy,
    rdf,
    reweight,
    reweighted_mean,
    site_occupancy,
    split_params,
    virial_pressure,
    virial_stress,
    volume,
    weights,
)

__all__ = ["Frames", "RefineResult", "Reweighted", "StressTarget", "block_jackknife", "cell_parameters",
           "check_frames", "dft_penalty", "effective_sample_size", "frame_graphs", "frame_map",
           "frames_from_trajectory", "heat_capacity_nvt", "ideal_pressure_gpa", "langevin", "langevin_checked",
           "maxwell_boltzmann", "mean_stress", "merge_params", "msd", "msd_and_grad", "npt_response",
           "potential_energy", "rdf", "refine_stress", "reweight", "reweighted_mean", "site_occupancy",
           "split_params", "stress_target", "virial_pressure", "virial_stress", "volume", "weights"]
