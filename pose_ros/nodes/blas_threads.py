"""One BLAS thread per node process unless the user chose otherwise.

Why: NumPy's OpenBLAS starts a thread per core in every process, and after each small solve (the
IK's 16x16 systems, ICP, PnP, SVDs) that thread spin-waits. On a small CPU the node processes then
spin against each other, torch and the camera: `pose-ros bench-node --objects 3` on the 2-core
machine ran at 2.4 and 4.0 Hz without, 3.8-8.0 Hz with; the retarget node's IK solve took 12 ms
wall instead of 3.9 ms (README). torch keeps its own thread setting.

The launches put this into each node's environment (`launch_specs.launch_environment`); a node
started on its own (`ros2 run`, `python -m pose_ros.nodes...`) gets it from `pose_ros.nodes`'s
import, which comes before NumPy's in every node module. The `pose-ros` command limits itself the same
way, so that `pose-ros bench` and `eval` time the estimator as a node runs it (3 demo objects: the
BLAS threads' spinning had taken ~40% of a frame's time on the loaded 2-core machine).
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

__all__ = ["BLAS_THREAD_ENVS", "blas_environment", "limit_blas_threads"]

BLAS_THREAD_ENVS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to ``environ``: OPENBLAS_NUM_THREADS=1, or nothing where a thread count is set."""
    if any(environ.get(k) for k in BLAS_THREAD_ENVS):
        return {}
    return {"OPENBLAS_NUM_THREADS": "1"}


def limit_blas_threads() -> bool:
    """Apply ``blas_environment`` to this process; only effective before NumPy is imported.
    Returns whether it took effect."""
    if "numpy" in sys.modules:
        return False
    os.environ.update(blas_environment(os.environ))
    return True
