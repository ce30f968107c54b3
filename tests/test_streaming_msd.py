"""Streaming (order-n) MSD accumulators equal the frame-based MSD over the same time origins, and
survive a kill and resume (state saved to disk mid-run)."""

import jax
import numpy as np

from lycb_jax import analysis as A
from lycb_jax.analysis.streaming import StreamingMSD, streaming_finalize, streaming_init, streaming_update


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
    state = jax.jit(_scan)(streaming_init(6, levels, block, jax.numpy.float32), x)
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
    half = jax.jit(_scan)(streaming_init(6, levels, block, jax.numpy.float32), x[:500])
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
