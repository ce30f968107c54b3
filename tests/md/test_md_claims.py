"""README claims about the MD protocol, each against an independent reference:

- a runaway replica is frozen and reported while the others go on, unchanged (a run without it);
- ``lycb-jax md``/``study``/``predict --model DIR`` use a fine-tuned checkpoint folder (a known shift of
  one element's reference energy: n_element x 0.1 eV on the pretrained model's energies);
- heating ramps the thermostat target linearly from start_K to T, NVT then holds T (analytic ramp);
- the production cell is the average of the NpT cells over the last npt_average_ps (ASE's standard form
  of each stored frame, averaged here).

The MD-machinery claims use the cheap Lennard-Jones argon of ``potentials.py``.
"""

import dataclasses

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from ase.cell import Cell

from lycb_jax.md import Protocol, Simulation
from potentials import EPS, LennardJones, argon, lj, lj_model

# -- a runaway replica is frozen, the others go on -------------------------------------------------------------

KRYPTON = 36  # the marked replica: same LJ geometry, but its potential is turned upside down


@dataclasses.dataclass(frozen=True)
class UnstableForKrypton(LennardJones):
    """LJ argon, except for a replica made of Kr: there the pair potential is -20 x LJ, whose fcc lattice
    is a maximum; the rattled atoms fall onto each other (1/r^12 well) and the temperature runs away."""

    def energy(self, params, species, positions, cell, atom_mask, graph):
        from lycb_jax.models.base import edge_vectors

        factor = jnp.where(jnp.any(species == KRYPTON), -20.0, 1.0)
        vec = edge_vectors(positions, cell, graph)
        r = jnp.sqrt(jnp.where(graph.edge_mask, jnp.sum(vec**2, -1), 1.0))
        pair = jnp.where(graph.edge_mask, lj(r, params["epsilon"] * factor), 0.0)
        return jnp.sum(pair), jnp.zeros(species.shape[0], positions.dtype)


def _runaway_protocol(temps):
    return Protocol(temperatures_K=temps, dt_fs=4.0, heat_ps=0.4, nvt_ps=0.4, npt_ps=0.0, production_ps=0.4,
                    save_every_fs=40.0, chunk_ps=0.2, checkpoint_every_ps=0.2, start_K=20.0, skin=0.5)


@pytest.mark.slow
def test_runaway_replica_is_frozen_and_the_others_equal_a_run_without_it(tmp_path, capsys):
    from lycb_jax.models import Model

    good = [argon(2, seed=1), argon(2, seed=2)]
    bad = argon(2, seed=3)
    bad.set_atomic_numbers([KRYPTON] * len(bad))
    unstable = Model(UnstableForKrypton(), {"epsilon": jnp.float32(EPS)}, "lj-unstable-kr")

    ref = Simulation(lj_model(), good, _runaway_protocol((40.0, 60.0)), tmp_path / "ref", progress=False).run()
    capsys.readouterr()
    summary = Simulation(unstable, good + [bad], _runaway_protocol((40.0, 60.0, 50.0)), tmp_path / "bad",
                         progress=False).run()
    out = capsys.readouterr().out

    assert ref["alive"] == [True, True] and not ref["failed"]
    assert summary["alive"] == [True, True, False]
    assert list(summary["failed"]) == [2] and "frozen" in summary["failed"][2]
    assert "WARNING: replica 2 (T = 50 K) stopped" in out and "WARNING: replica 0" not in out
    with h5py.File(tmp_path / "ref" / "trajectory.h5") as a, h5py.File(tmp_path / "bad" / "trajectory.h5") as b:
        assert sorted(a) == sorted(b) == ["heat", "nvt", "production"]
        for stage in a:
            assert b[stage]["positions"].shape[:2] == (3, a[stage]["positions"].shape[1])  # the run finished
            for name in ("positions", "temperature", "potential_energy", "cell", "pressure"):
                np.testing.assert_allclose(b[stage][name][:2], a[stage][name][:], rtol=1e-5, atol=1e-4,
                                           err_msg=f"{stage}/{name}")
        # the runaway replica is frozen: its last good state repeats, finite, through the later stages
        x = b["production"]["positions"][2]
        assert np.all(np.isfinite(x)) and np.ptp(x, axis=0).max() == 0.0
        assert np.ptp(b["production"]["positions"][0], axis=0).max() > 0.01  # a good one moves
        # it really ran away: the temperature left the 3x bound, or the positions stopped early in the run
        t_bad = np.concatenate([b[s]["temperature"][2] for s in ("heat", "nvt")])
        assert np.ptp(b["nvt"]["positions"][2], axis=0).max() == 0.0 or t_bad.max() > 3 * 50.0


# -- --model DIR: a fine-tuned checkpoint folder is used by md, study and predict ------------------------------

SHIFT_EV = 0.1  # added to Li's reference energy (composition model) in the "fine-tuned" checkpoint
LI = 3


@pytest.fixture(scope="module")
def shifted_checkpoint(tmp_path_factory):
    """A checkpoint folder written by lycb_jax.models.checkpoint.save_checkpoint: the pretrained CHGNet
    with Li's atom_ref raised by SHIFT_EV (its forces are unchanged, its energies shift by n_Li x SHIFT_EV)."""
    import lycb_jax
    from lycb_jax.models import Model
    from lycb_jax.models.checkpoint import save_checkpoint

    base = lycb_jax.load_model("chgnet-0.3.0")
    ref = np.asarray(base.params["atom_ref"]).copy()
    ref[LI - 1] += SHIFT_EV  # atom_ref is indexed by Z - 1
    params = dict(base.params, atom_ref=jnp.asarray(ref))
    folder = tmp_path_factory.mktemp("ft") / "chgnet-li-shifted"
    save_checkpoint(folder, Model(base.module, params, "chgnet-li-shifted"), {"note": "test: Li atom_ref + 0.1 eV"})
    loaded = lycb_jax.load_model(folder)
    assert float(loaded.params["atom_ref"][LI - 1]) == pytest.approx(float(base.params["atom_ref"][LI - 1]) + SHIFT_EV)
    return folder


def _cif():
    from importlib import resources

    return str(resources.files("lycb_jax") / "data" / "Li3YCl6_P-3m1_ordered30.cif")


def _check_trajectory(h5_path, pretrained_h5, n_li):
    """The run with the shifted checkpoint against the same protocol with the pretrained model: the
    same positions (the shift changes no force), every frame's potential energy higher by n_Li x SHIFT_EV."""
    with h5py.File(h5_path) as f, h5py.File(pretrained_h5) as g:
        assert int(np.sum(f.attrs["numbers"][0] == LI)) == n_li
        assert sorted(f) == sorted(g) == ["heat", "production"]
        for stage in f:
            np.testing.assert_allclose(f[stage]["positions"][:], g[stage]["positions"][:], atol=1e-5)
            shift = f[stage]["potential_energy"][:].astype(np.float64) - g[stage]["potential_energy"][:]
            assert shift.size >= 8
            np.testing.assert_allclose(shift, n_li * SHIFT_EV, atol=2e-3, err_msg=stage)


MD_TOML = """dt_fs = 2.0
start_K = 300.0
heat_ps = 0.02
nvt_ps = 0.0
npt_ps = 0.0
production_ps = 0.02
save_every_fs = 4.0
chunk_ps = 0.02
checkpoint_every_ps = 0.02
"""  # 2 x 10 steps; md and study share the compiled chunk


@pytest.fixture(scope="module")
def cli_runs(shifted_checkpoint, tmp_path_factory):
    """``md``, ``study`` and ``predict`` through the command line with ``--model DIR``. The study's
    refusal of a production too short for a diffusive window (``lycb_jax.workflows.study.check_before_md``) is
    switched off: what is tested here is which model its MD runs, and a production long enough for that
    refusal costs minutes of CHGNet on a CPU."""
    import lycb_jax.workflows.study
    from lycb_jax.cli import main

    work = tmp_path_factory.mktemp("cli")
    (work / "md.toml").write_text(MD_TOML)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LYCB_JAX_CACHE", "off")  # no compiled programs written outside the test folders
        mp.setattr(lycb_jax.workflows.study, "check_before_md", lambda protocol, *a: "feasibility check skipped (test)")
        common = ["--model", str(shifted_checkpoint), "--config", str(work / "md.toml"), "-T", "300", "400"]
        assert main(["md", _cif(), *common, "--out", str(work / "md")]) == 0
        assert main(["md", _cif(), "--model", "chgnet-0.3.0", *common[2:], "--out", str(work / "md_pretrained")]) == 0
        assert main(["study", "--structure", _cif(), *common, "--out", str(work / "study")]) == 0
        assert main(["predict", _cif(), "--model", str(shifted_checkpoint), "-o", str(work / "ft.json")]) == 0
        assert main(["predict", _cif(), "-o", str(work / "pre.json")]) == 0
    return work


def _n_li():
    from ase.io import read

    return int(np.sum(read(_cif()).numbers == LI))


@pytest.mark.slow
@pytest.mark.xdist_group("md_claims_cli")  # cli_runs computed once
def test_md_with_model_dir_uses_the_checkpoint(cli_runs):
    _check_trajectory(cli_runs / "md" / "trajectory.h5", cli_runs / "md_pretrained" / "trajectory.h5", _n_li())


@pytest.mark.slow
@pytest.mark.xdist_group("md_claims_cli")  # cli_runs computed once
def test_study_with_model_dir_uses_the_checkpoint(cli_runs):
    _check_trajectory(cli_runs / "study" / "md" / "trajectory.h5", cli_runs / "md_pretrained" / "trajectory.h5",
                      _n_li())
    assert (cli_runs / "study" / "transport.json").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("md_claims_cli")  # cli_runs computed once
def test_predict_with_model_dir_uses_the_checkpoint(cli_runs):
    import json

    def energy(path):
        return float(json.loads(path.read_text())[0]["energy_eV"])

    assert energy(cli_runs / "ft.json") - energy(cli_runs / "pre.json") == pytest.approx(_n_li() * SHIFT_EV, abs=1e-3)


# -- heating ramp, then NVT at T -----------------------------------------------------------------------------

@pytest.mark.slow
def test_heating_ramps_linearly_from_start_to_target_then_nvt_holds_it(tmp_path):
    """8 argon replicas heated from 20 K to 80 K over 4 ps (tau_t 40 fs: the thermostat follows its
    target within ~1 K). The replica mean of the instantaneous temperature, in 8 windows of 0.5 ps,
    follows the analytic ramp T(t) = start + (T - start) t / heat_ps within 4 standard errors (replica
    spread) + 3 K (the thermostat lags its moving target by ~0.1 ps: ~2 K here); NVT afterwards averages
    T. A step to T, or no heating, misses by > 15 K; a slope 10% off, by 6 K at the end."""
    start, target, heat_ps = 20.0, 80.0, 4.0
    proto = Protocol(temperatures_K=(target,) * 8, dt_fs=4.0, tau_t_fs=40.0, start_K=start, heat_ps=heat_ps,
                     nvt_ps=2.0, npt_ps=0.0, production_ps=0.0, save_every_fs=20.0, chunk_ps=1.0,
                     checkpoint_every_ps=10.0, skin=0.5)
    Simulation(lj_model(), argon(2), proto, tmp_path, progress=False).run()
    with h5py.File(tmp_path / "trajectory.h5") as f:
        t_ps = f["heat"]["time_fs"][:] / 1000
        temps = f["heat"]["temperature"][:].astype(np.float64)  # [8, F]
        nvt = f["nvt"]["temperature"][:].astype(np.float64)
    assert t_ps[-1] == pytest.approx(heat_ps)
    windows = np.array_split(np.arange(t_ps.size), 8)
    for w in windows:
        ramp = start + (target - start) * t_ps[w] / heat_ps  # the analytic target at each frame
        per_replica = (temps[:, w] - ramp).mean(axis=1)
        err = per_replica.std(ddof=1) / np.sqrt(per_replica.size)
        print(f"t = {t_ps[w].mean():.2f} ps: <T> = {temps[:, w].mean():.1f} K, ramp {ramp.mean():.1f} K +- {err:.1f}")
        assert abs(per_replica.mean()) < 4 * err + 3.0
    # a straight line through the replica mean: intercept start_K, slope (T - start_K) / heat_ps
    slope, intercept = np.polyfit(t_ps, temps.mean(0), 1)
    assert slope == pytest.approx((target - start) / heat_ps, rel=0.1)
    assert intercept == pytest.approx(start, abs=3.0)
    per_replica = nvt.mean(axis=1)
    err = per_replica.std(ddof=1) / np.sqrt(per_replica.size)
    print(f"NVT: <T> = {per_replica.mean():.2f} +- {err:.2f} K (target {target})")
    assert abs(per_replica.mean() - target) < 4 * err + 1.0


# -- the production cell is the average of the last npt_average_ps of NpT ------------------------------------

@pytest.mark.filterwarnings("ignore:after 'npt' the average cell differs")  # 32 atoms: the shape fluctuates
@pytest.mark.slow
def test_production_cell_is_the_average_npt_cell(tmp_path):
    """tri barostat on argon at 500 bar (the cell fluctuates in shape and may rotate): the production
    cell equals the mean, over the NpT frames of the last npt_average_ps, of each frame's cell in ASE's
    standard (lower-triangular) form; it differs from the last NpT cell and from the average of the whole
    NpT stage by far more than the tolerance."""
    npt_ps, avg_ps, every_fs = 1.6, 0.8, 40.0
    proto = Protocol(temperatures_K=(50.0, 70.0), dt_fs=4.0, tau_t_fs=100.0, tau_p_fs=400.0, pressure_bar=500.0,
                     start_K=20.0, heat_ps=0.2, nvt_ps=0.2, npt_ps=npt_ps, npt_average_ps=avg_ps, production_ps=0.2,
                     save_every_fs=every_fs, chunk_ps=0.4, checkpoint_every_ps=10.0, skin=0.5, barostat="tri")
    Simulation(lj_model(), argon(2, a=5.45), proto, tmp_path, progress=False).run()
    with h5py.File(tmp_path / "trajectory.h5") as f:
        npt_cells = f["npt"]["cell"][:].astype(np.float64)  # [R, F, 3, 3]
        npt_t = f["npt"]["time_fs"][:]
        prod = f["production"]["cell"][:].astype(np.float64)
    n_avg = int(round(avg_ps * 1000 / every_fs))  # frames at (npt_ps - avg_ps, npt_ps]
    assert npt_t[-1] == pytest.approx(npt_ps * 1000) and npt_t[-n_avg - 1] == pytest.approx((npt_ps - avg_ps) * 1000)
    for r in range(prod.shape[0]):
        expected = np.mean([Cell(c).standard_form()[0][:] for c in npt_cells[r, -n_avg:]], axis=0)
        last = Cell(npt_cells[r, -1]).standard_form()[0][:]
        whole = np.mean([Cell(c).standard_form()[0][:] for c in npt_cells[r]], axis=0)
        print(f"replica {r}: |avg - last| = {np.abs(expected - last).max():.4f} A, "
              f"|avg - average of the whole NpT| = {np.abs(expected - whole).max():.4f} A")
        # the test can tell the average of the window from the last cell and from the average of the whole stage
        assert np.abs(expected - last).max() > 10 * 2e-4 and np.abs(expected - whole).max() > 10 * 2e-4
        for frame in prod[r]:  # fixed through the production
            np.testing.assert_allclose(frame, expected, atol=2e-4)
