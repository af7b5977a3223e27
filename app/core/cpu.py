"""CPU settings of the processes that run forward passes next to other work (workers, the embedded server).

PyTorch's CPU kernels run on libgomp's OpenMP threads, which by default spin for about 300,000 iterations after
each parallel region before they sleep. Alone on the machine that is harmless; beside the voxel workers (other
processes on the same cores) the spinning threads take the cores the voxel workers need. Measured on this
project's 2-core machine, the shipped model at batch 64 (grids/min):

============================  =====================  ===============================
``GOMP_SPINCOUNT``            alone                  beside two busy processes
============================  =====================  ===============================
libgomp's default             21,216                 4,151
10,000 (this default)         21,283                 9,398
``OMP_WAIT_POLICY=passive``   17,862                 11,134
============================  =====================  ===============================

libgomp reads the variable when it is loaded, i.e. when torch is first imported: call
:func:`short_openmp_spin` before that. A value already set in the environment wins.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

#: Spin iterations of an idle OpenMP thread before it sleeps (libgomp's own default is 300,000).
DEFAULT_GOMP_SPINCOUNT = "10000"


def short_openmp_spin(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` (unless already set) for the torch this process will import.

    Returns False, and changes nothing, when torch is already imported (too late for libgomp to read it).
    """
    env = os.environ if environ is None else environ
    if "torch" in sys.modules:
        log.debug("torch is already imported: GOMP_SPINCOUNT left as it is")
        return False
    env.setdefault("GOMP_SPINCOUNT", DEFAULT_GOMP_SPINCOUNT)
    return True
