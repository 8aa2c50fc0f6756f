"""Fused CPU kernels for the recurrent steps (``fused.cpp``), built once at first use.

``gru_cell`` and ``tanh`` compute exactly what the readable PyTorch code in
:mod:`engramlab.ponder.steps` computes (tests/test_fused.py checks both, forward and backward,
to float32 rounding), in one pass over memory forward and one backward instead of a dozen
small operators. A parity update at the paper's sizes spends most of its time in those operators,
not in the matrix products, so this is where the speed of ``model.fused`` comes from
(benchmarks/parity_throughput.py measures it side by side with the eager path and two public
implementations).

The kernels are compiled by ``torch.utils.cpp_extension`` with the machine's C++ compiler and
ninja on first use (about a minute; cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``, one build per kind of CPU). Where that is not possible (no compiler, another CPU
architecture), or with ``ENGRAMLAB_FUSED=0`` in the environment, :func:`load` says so in one
line and returns ``None``; the steps then run their PyTorch code, which computes the same
function.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("fused.cpp")


def cpu_fingerprint() -> str:
    """A short hash of the CPU's instruction-set flags: the kernels are compiled for the machine
    (``-march=native``), so a cache shared by machines of different CPUs keeps one build per kind."""
    flags = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86, ARM
                flags += line
                break
    except OSError:
        pass
    return hashlib.blake2b(flags.encode(), digest_size=4).hexdigest()


NAME = f"engramlab_fused_{cpu_fingerprint()}"


@functools.cache
def load():
    """The compiled kernels module, or ``None`` (with one line on stderr saying why) if unavailable."""
    if os.environ.get("ENGRAMLAB_FUSED", "1") == "0":
        return None
    try:
        from torch.utils import cpp_extension

        if not built_before(cpp_extension):
            print("engramlab: compiling the fused step kernels (once, about a minute)", file=sys.stderr, flush=True)
        return cpp_extension.load(
            name=NAME,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native"],
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, unsupported platform: the eager path computes the same
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        print(f"engramlab: fused kernels unavailable ({reason}); using PyTorch operators", file=sys.stderr)
        return None


def built_before(cpp_extension) -> bool:
    """Whether a build of the kernels is in torch's extension cache (torch rebuilds it anyway if
    ``fused.cpp`` changed since; this only decides whether to announce a wait)."""
    try:
        return (Path(cpp_extension._get_build_directory(NAME, False)) / f"{NAME}.so").exists()
    except Exception:  # a private helper of torch: if it moved, announce the wait every time
        return False
