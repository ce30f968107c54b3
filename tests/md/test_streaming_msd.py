"""Streaming (order-n) MSD accumulators equal the frame-based MSD over the same time origins, and
survive a kill and resume (state saved to disk mid-run): alone, and inside the MD (Simulation with
``streaming_msd_every_fs``: the cheap LJ model of tests/potentials.py, 2 replicas x 32 atoms)."""

import h5py
import jax
import numpy as np
import pytest
from potentials import argon, lj_model

from lycb_jax import analysis as A
from lycb_jax.md.observables import (
    StreamingMSD,
    streaming_finalize,
    streaming_init,
    streaming_update,
)
from lycb_jax.md import Protocol, Simulation


def _scan(state, frames):
    return jax.lax.scan(lambda s, x: (streaming_update(s, x), None), state, frames)[0]


def _reference(x, lag, period):
    """Frame-based MSD at ``lag`` with time origins at multiples of ``period`` (numpy float64)."""
    t0 = np.arange(0, x.shape[0] - lag, period)
    d = x[t0 + lag] - x[t0]
    return np.mean(np.sum(d**2, -1)), np.mean(np.sum(d.sum(1) ** 2, -1)) / x.shape[1]


def test_streaming_equals_frame_based_msd_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.1, (1200, 6, 3)), axis=0) + 20.0
    levels, block = 3, 8
    state = jax.jit(_scan)(streaming_init(6, levels, block, dtype=jax.numpy.float32), x)
    lags, tr, col, pairs = streaming_finalize(state)
    assert lags.max() == block**3 and pairs[0] == 1199
    for lag, a, b in zip(lags, tr, col):
        period = block ** max(0, int(np.floor(np.log(lag) / np.log(block) - 1e-9)))  # level used for this lag
        period = 1 if lag <= block else period
        ra, rb = _reference(x, lag, period)
        np.testing.assert_allclose([a, b], [ra, rb], rtol=2e-5, err_msg=f"lag {lag}")
    # level 0 is the all-origin MSD: identical to the FFT MSD at lags 1..block
    fft = A.msd_fft(x)
    np.testing.assert_allclose(tr[:block], np.asarray(fft.tracer)[1 : block + 1], rtol=1e-4)
    np.testing.assert_allclose(col[:block], np.asarray(fft.collective)[1 : block + 1], rtol=1e-4)
    # kill after 500 frames: save the state, start a new process-like path from the file, finish
    half = jax.jit(_scan)(streaming_init(6, levels, block, dtype=jax.numpy.float32), x[:500])
    np.savez(tmp_path / "msd_state.npz", **half._asdict())
    with np.load(tmp_path / "msd_state.npz") as f:
        resumed = StreamingMSD(**{k: jax.numpy.asarray(f[k]) for k in StreamingMSD._fields})
    resumed = jax.jit(_scan)(resumed, x[500:])
    for a, b in zip(streaming_finalize(resumed), (lags, tr, col, pairs)):
        np.testing.assert_array_equal(a, b)


def test_streaming_vmaps_over_replicas():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(0, 0.1, (3, 300, 4, 3)), axis=1)
    init = jax.vmap(lambda _: streaming_init(4, 2, 5))(np.arange(3))
    states = jax.jit(jax.vmap(_scan))(init, x)
    for r in range(3):
        one = jax.tree.map(lambda v, r=r: v[r], states)
        lags, tr, _, _ = streaming_finalize(one)
        np.testing.assert_allclose(tr[:5], [_reference(x[r], lag, 1)[0] for lag in lags[:5]], rtol=2e-5)


# -- wired into the MD (lycb_jax.md.Simulation): LJ argon with a quarter of the atoms labelled Li (light, mobile)

LEVELS, BLOCK, EVERY_FS = 2, 8, 20.0
RTOL = 3e-5  # float32 round-off of the accumulated sums (measured: 7e-6 at most)
STREAM = ("streaming_msd_lag_fs", "streaming_msd_tracer_A2", "streaming_msd_collective_A2", "streaming_msd_pairs")


def _atoms():
    atoms = argon(2)  # 32 atoms; LJ forces ignore the species, the masses follow them
    atoms.numbers[::4] = 3  # 8 "Li" (6.9 amu) among 24 Ar (39.9 amu): the framework drift is not negligible
    return atoms


def _protocol(**kw):
    base = {"temperatures_K": (60.0, 90.0), "dt_fs": 4.0, "heat_ps": 0.2, "nvt_ps": 0.0, "production_ps": 2.0,
            "save_every_fs": EVERY_FS, "chunk_ps": 0.4, "checkpoint_every_ps": 0.8, "start_K": 20.0, "skin": 0.5,
            "streaming_msd_every_fs": EVERY_FS, "streaming_msd_levels": LEVELS, "streaming_msd_block": BLOCK}
    base.update(kw)
    return Protocol(**base)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed")
    Simulation(lj_model(), _atoms(), _protocol(), out, progress=False).run()
    return out


def _read(out):
    with h5py.File(out / "trajectory.h5") as f:
        g = f["production"]
        return ({k: g[k][:] for k in STREAM}, g["positions"][:].astype(np.float64), f.attrs["numbers"],
                f.attrs["masses_amu"].astype(np.float64))


def _frame_msd(x, li, masses, lag, period, drift=True):
    """Frame-based tracer and collective MSD (A^2, numpy float64) of the Li in x [F, N, 3] at ``lag``
    frames, origins at multiples of ``period`` frames; Li taken relative to the framework's mass-weighted
    centre of mass (lycb_jax.analysis.msd's rule) when ``drift``."""
    y = x[:, li]
    if drift:
        w = masses[~li]
        y = y - (np.einsum("fni,n->fi", x[:, ~li], w) / w.sum())[:, None]
    t0 = np.arange(0, len(y) - lag, period)
    d = y[t0 + lag] - y[t0]
    return np.mean(np.sum(d**2, -1)), np.mean(np.sum(d.sum(1) ** 2, -1)) / li.sum(), len(t0)


@pytest.mark.slow
def test_md_streaming_msd_equals_frame_msd(streamed):
    """The MD's streaming MSD (updated in the scan every 20 fs) equals the MSD computed here with numpy
    from the frames saved at the same interval, over the same time origins (all origins for lags up to
    BLOCK updates, every BLOCK-th origin beyond), to float32 round-off; the origin counts agree."""
    s, pos, numbers, masses = _read(streamed)
    n_frames = pos.shape[1]
    assert n_frames == 100
    np.testing.assert_allclose(s["streaming_msd_lag_fs"], EVERY_FS * np.array(list(range(1, BLOCK + 1))
                                                                               + [BLOCK * k for k in range(2, BLOCK + 1)]))
    worst, drift_effect = 0.0, 0.0
    for r in range(pos.shape[0]):
        li = numbers[r] == 3
        for j, lag_fs in enumerate(s["streaming_msd_lag_fs"]):
            lag = round(lag_fs / EVERY_FS)
            period = 1 if lag <= BLOCK else BLOCK
            tracer, collective, pairs = _frame_msd(pos[r], li, masses[r], lag, period)
            assert s["streaming_msd_pairs"][r, j] == pairs
            got = np.array([s["streaming_msd_tracer_A2"][r, j], s["streaming_msd_collective_A2"][r, j]])
            np.testing.assert_allclose(got, [tracer, collective], rtol=RTOL, err_msg=f"replica {r}, lag {lag_fs} fs")
            worst = max(worst, np.max(np.abs(got / [tracer, collective] - 1)))
            no_drift = _frame_msd(pos[r], li, masses[r], lag, period, drift=False)[1]
            drift_effect = max(drift_effect, abs(no_drift / collective - 1))
    print(f"largest relative difference streaming vs frames: {worst:.2e}; framework drift changes the collective "
          f"MSD by up to {drift_effect:.1%}")
    assert drift_effect > 100 * RTOL  # the check above would see a missing or wrong drift removal


@pytest.mark.slow
def test_md_streaming_msd_survives_kill_and_resume(streamed, tmp_path, monkeypatch):
    """Stopped one chunk after the mid-production checkpoint (frames beyond the checkpoint written,
    then dropped at resume), resumed: the streaming MSD equals the uninterrupted run's. The checkpoint
    holds the accumulator (resume does not start it afresh: the pair counts would differ)."""
    real = Simulation._append

    def stop_later(self, f, stage, frames, t0_fs):
        real(self, f, stage, frames, t0_fs)
        if stage == "production" and t0_fs >= 800.0:  # after the checkpoint at 800 fs of production
            raise KeyboardInterrupt("killed mid-production")

    monkeypatch.setattr(Simulation, "_append", stop_later)
    with pytest.raises(KeyboardInterrupt):
        Simulation(lj_model(), _atoms(), _protocol(), tmp_path, progress=False).run()
    monkeypatch.setattr(Simulation, "_append", real)
    ck = np.load(tmp_path / "checkpoint.npz")
    assert int(ck["step"]) == 200 and "msd_buffer" in ck  # production, 800 fs
    with h5py.File(tmp_path / "trajectory.h5") as f:  # the curve written at that checkpoint
        assert f["production"]["positions"].shape[1] == 60
        assert f["production"]["streaming_msd_pairs"][0, 0] == 39
    Simulation(lj_model(), _atoms(), _protocol(), tmp_path, resume=True, progress=False).run()
    a, b = _read(streamed)[0], _read(tmp_path)[0]
    for k in STREAM:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="updated every 20.0 fs, this run asks for 40.0 fs"):
        Simulation(lj_model(), _atoms(), _protocol(streaming_msd_every_fs=40.0), tmp_path, resume=True,
                   progress=False).run()


def test_md_streaming_msd_off_by_default(streamed, tmp_path):
    """Without the setting: no streaming datasets, no accumulator in the checkpoint, and the same frames
    as the run with it (the accumulator does not touch the dynamics)."""
    assert Protocol().streaming_msd_every_fs == 0
    Simulation(lj_model(), _atoms(), _protocol(streaming_msd_every_fs=0.0), tmp_path, progress=False).run()
    assert not any(k.startswith("msd_") for k in np.load(tmp_path / "checkpoint.npz"))
    with h5py.File(tmp_path / "trajectory.h5") as off, h5py.File(streamed / "trajectory.h5") as on:
        assert not any(k.startswith("streaming") for k in off["production"])
        assert sorted(on["production"]) == sorted(list(off["production"]) + list(STREAM))
        for stage in off:
            for name in off[stage]:
                np.testing.assert_array_equal(off[stage][name][:], on[stage][name][:], err_msg=f"{stage}/{name}")


@pytest.mark.parametrize("kw, match", [
    ({"streaming_msd_every_fs": -4.0}, "must be >= 0"),
    ({"streaming_msd_every_fs": 6.0}, "multiple of the time step"),
    ({"streaming_msd_block": 1}, "block >= 2"),
    ({"streaming_msd_levels": 0}, "levels >= 1"),
    ({"streaming_msd_block": 10, "streaming_msd_levels": 10}, "overflows"),
    ({"streaming_msd_species": "Xx"}, "not an element"),
])
def test_bad_streaming_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _protocol(**kw).validate()


def test_streaming_species_must_be_present(tmp_path):
    with pytest.raises(ValueError, match="no such atom"):
        Simulation(lj_model(), argon(1), _protocol(streaming_msd_species="Na"), tmp_path, progress=False)


@pytest.mark.slow
def test_analyze_reads_the_streaming_curve(streamed, tmp_path):
    """`lycb-jax analyze --msd-source streaming`: the report comes from the run's streaming curve (its MSD
    equals the frames' at the stored lags, so the two verdicts agree), and a run without one is refused."""
    from lycb_jax.analysis import analyse_md

    frames = analyse_md(streamed / "trajectory.h5", tmp_path / "f", species="Li")
    stream = analyse_md(streamed / "trajectory.h5", tmp_path / "s", species="Li", msd_source="streaming")
    assert [r["converged"] for r in stream["per_temperature"]] == [r["converged"] for r in frames["per_temperature"]]
    assert all("streaming" in (r["note"] or "") for r in stream["per_temperature"])
    off = tmp_path / "off"
    Simulation(lj_model(), _atoms(), _protocol(streaming_msd_every_fs=0.0), off, progress=False).run()
    with pytest.raises(ValueError, match="no streaming MSD"):
        analyse_md(off / "trajectory.h5", tmp_path / "o", species="Li", msd_source="streaming")
