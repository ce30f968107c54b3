import importlib
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# Tests never read or write the user's compilation cache (~/.cache/lycb_jax/xla): the CLI turns it on for the
# process, and two pytest-xdist workers (or another lycb_jax process) sharing it crashed a CI run in JAX's cache
# read (segfault in compilation_cache.get_executable_and_time). Tests of the cache pass their own folder.
os.environ["LYCB_JAX_CACHE"] = "off"


@pytest.fixture(scope="session")
def model():
    import lycb_jax

    return lycb_jax.load_model("chgnet-0.3.0")


@pytest.fixture(scope="session")
def torch_model():
    chgnet_model = importlib.import_module("chgnet.model")
    return chgnet_model.CHGNet.load(model_name="0.3.0", verbose=False)
