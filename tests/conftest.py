import ctypes
import faulthandler
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# Tests never touch the user's compilation cache (~/.cache/lycb_jax/xla), and no two pytest-xdist workers
# share one: a CI run with two workers on one folder segfaulted in JAX's cache read. Each worker (or a
# plain run) gets its own throw-away folder, so programs compiled by one test are reused by the next;
# in-process CLI calls are told "off" so they do not switch to the user's folder.
os.environ["LYCB_JAX_CACHE"] = "off"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
# A worker that dies (segfault, abort) takes its traceback with it under xdist: each process writes
# faulthandler's dump to a file in a folder the controller creates, and the controller prints any
# non-empty one at the end of the run (pytest_terminal_summary), where CI's log tail shows it.
if "LYCB_JAX_TEST_CRASH_DIR" not in os.environ:
    os.environ["LYCB_JAX_TEST_CRASH_DIR"] = tempfile.mkdtemp(prefix="lycb_jax_test_crash_")
_CRASH_LOG = open(os.path.join(os.environ["LYCB_JAX_TEST_CRASH_DIR"], f"{_WORKER}-{os.getpid()}.log"), "w")
faulthandler.enable(file=_CRASH_LOG, all_threads=True)


def pytest_configure(config):
    # after pytest's own faulthandler plugin, which would otherwise point the handler back at stderr
    faulthandler.enable(file=_CRASH_LOG, all_threads=True)
    from lycb_jax.runtime.cache import enable_compilation_cache

    enable_compilation_cache(tempfile.mkdtemp(prefix=f"lycb_jax_test_xla_{_WORKER}_"))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module (the per-worker disk cache keeps
    them for reuse): a worker that had compiled every earlier module's programs crashed inside XLA's
    CPU compiler (SIGSEGV / SIGABRT in backend_compile_and_load) in test_study, reproducibly in one
    process running gw0's 124 tests, never when the module ran alone."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    if hasattr(ctypes.CDLL(None), "malloc_trim"):  # glibc keeps freed pages: hand them back, so a worker's
        ctypes.CDLL(None).malloc_trim(0)  # resident memory follows its current module, not its largest one


def pytest_runtest_logstart(nodeid, location):
    _CRASH_LOG.write(f"[{time.strftime('%H:%M:%S')}] start {nodeid}\n")
    _CRASH_LOG.flush()


def pytest_terminal_summary(terminalreporter):
    if _WORKER != "main":
        return
    for log in sorted(Path(os.environ["LYCB_JAX_TEST_CRASH_DIR"]).glob("*.log")):
        text = log.read_text()
        if "Fatal Python error" in text or "most recent call first" in text:
            terminalreporter.write_sep("=", f"crash log {log.name}")
            terminalreporter.write_line(text[-6000:])


@pytest.fixture(scope="session")
def model():
    import lycb_jax

    return lycb_jax.load_model("chgnet-0.3.0")


@pytest.fixture(scope="session")
def torch_model():
    chgnet_model = importlib.import_module("chgnet.model")
    return chgnet_model.CHGNet.load(model_name="0.3.0", verbose=False)


if os.environ.get("LYCB_TEST_MEMLOG"):  # opt-in: which test raises a worker's peak memory (issue 30's 8 GB)
    import resource

    def pytest_runtest_logfinish(nodeid, location):
        peak_mb = [resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        with open(os.environ["LYCB_TEST_MEMLOG"], "a") as fh:  # worker, its peak, its largest subprocess's, MB
            fh.write(f"{_WORKER}\t{peak_mb[0]:.0f}\t{peak_mb[1]:.0f}\t{nodeid}\n")
