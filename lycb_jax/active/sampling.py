"""Farthest-point sampling of MD frames for labelling (the paper's step 1.2: "a large geometric
variety, via furthest point sampling based on the mean squared error in atom positions")."""

from __future__ import annotations

import numpy as np


def position_features(positions: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
    """Per-frame features whose squared Euclidean distance is the mean squared difference of atom
    positions (A^2) between frames, after removing each frame's mean displacement (drift).

    ``positions`` [M, N, 3] unwrapped Cartesian (A) of frames with the same atoms; with ``cells``
    [M, 3, 3] the positions are first expressed in the first frame's cell (fractional coordinates
    mapped through cells[0]), so that frames of different volume compare by their displacements."""
    x = np.asarray(positions, np.float64)
    if cells is not None:
        cells = np.asarray(cells, np.float64)
        x = np.einsum("mni,mij,jk->mnk", x, np.linalg.inv(cells), cells[0])
    x = x - x.mean(axis=1, keepdims=True)
    return x.reshape(len(x), -1) / np.sqrt(x.shape[1])


def farthest_point_sampling(features: np.ndarray, n: int, selected: np.ndarray | None = None,
                            *, first: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``features`` [M, D] chosen greedily, each the farthest (squared
    Euclidean distance) from all rows chosen before it and from the rows of ``selected`` [K, D]
    (e.g. structures already in the training set). Without ``selected`` the first pick is ``first``.
    Ties go to the lowest index. O(M n D) time, O(M) memory."""
    f = np.asarray(features, np.float64)
    n = min(int(n), len(f))
    if n <= 0:
        return np.zeros(0, int)
    dist = np.full(len(f), np.inf)
    if selected is not None and len(selected):
        for s in np.asarray(selected, np.float64):
            dist = np.minimum(dist, np.sum((f - s) ** 2, axis=1))
        chosen = []
    else:
        chosen = [int(first)]
        dist = np.sum((f - f[first]) ** 2, axis=1)
    while len(chosen) < n:
        k = int(np.argmax(dist))
        chosen.append(k)
        dist = np.minimum(dist, np.sum((f - f[k]) ** 2, axis=1))
    return np.asarray(chosen, int)
