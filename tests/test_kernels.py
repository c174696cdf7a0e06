"""The kernel-sensitive tests again under the other CPU kernels this machine can emulate.

torch picks its float kernels by CPU (`torch.backends.cpu.get_cpu_capability()`); the environment
variable ATEN_CPU_CAPABILITY forces a lower one in a new process. So one machine checks that the
reference and chunking tests hold for the kernels of machines without its instruction sets too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SENSITIVE = ["tests/test_reference.py", "tests/test_compressor_chunks.py"]


def capability_under(requested: str) -> str:
    """The kernels torch runs with under ATEN_CPU_CAPABILITY=requested (it ignores what the CPU lacks)."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": requested}
    return subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.mark.parametrize("requested", ["default", "avx2"])
def test_reference_and_chunking_hold_under_emulated_kernels(requested):
    runs = capability_under(requested)
    if runs.lower() != requested:
        pytest.skip(f"this CPU cannot run torch's {requested} kernels (ATEN_CPU_CAPABILITY={requested} runs {runs})")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": requested}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_SENSITIVE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"under ATEN_CPU_CAPABILITY={requested}:\n{result.stdout[-4000:]}"
