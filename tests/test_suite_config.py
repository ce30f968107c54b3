"""The suite's own set-up: `--dist loadgroup` (pyproject) really keeps an xdist_group on one worker. With pytest
9.2 it silently does not (pytest-dev/pytest-xdist#1386), and the PyTorch parity references are then computed on
both workers (~7 GB and minutes each)."""

import subprocess
import sys


def test_loadgroup_keeps_a_group_on_one_worker(tmp_path):
    (tmp_path / "test_g.py").write_text(
        "import pytest\npytestmark = pytest.mark.xdist_group('g')\n" + "".join(f"def test_{k}():\n    pass\n" for k in range(6)))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --dist loadgroup\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-v",
                          str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    workers = {line.split()[0] for line in run.stdout.splitlines() if line.startswith("[gw") and "PASSED" in line}
    assert len(workers) == 1, f"the group ran on {sorted(workers)}"
