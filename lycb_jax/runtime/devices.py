"""Replicas over the local devices of one process: a 1-D mesh named 'replica' and the padding and placement
of replica-batched arrays on it (the MD chunk and the MSD both shard replicas this way; several processes are
:mod:`lycb_jax.runtime.distributed`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def replica_mesh(devices=None) -> jax.sharding.Mesh | None:
    """A 1-D mesh named 'replica' over the given (default: all local) devices; None for one device."""
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.array(devices), ("replica",)) if len(devices) > 1 else None


def shard_replicas(mesh: jax.sharding.Mesh, n_pad: int, *trees):
    """Pad axis 0 of every leaf to ``n_pad`` (copies of replica 0) and shard it over the mesh."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("replica"))

    def pad(x):
        x = jnp.asarray(x)
        if x.shape[0] < n_pad:
            x = jnp.concatenate([x, jnp.repeat(x[:1], n_pad - x.shape[0], axis=0)])
        return jax.device_put(x, sharding)

    return [jax.tree.map(pad, t) for t in trees]
