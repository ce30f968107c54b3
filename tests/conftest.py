import importlib
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def model():
    import lycb_jax

    return lycb_jax.load_model("chgnet-0.3.0")


@pytest.fixture(scope="session")
def torch_model():
    chgnet_model = importlib.import_module("chgnet.model")
    return chgnet_model.CHGNet.load(model_name="0.3.0", verbose=False)
