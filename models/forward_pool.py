"""Forward passes on several CPU cores as independent single-threaded streams.

PyTorch's CPU kernels split each operation over a team of OpenMP threads that meet at a barrier after it. That
team is fast only while it has the cores to itself and is the only one in the process:

- any other work on the same cores (a storage fetch, the API, another process) deschedules one thread of the
  team, and the others wait for it at every barrier;
- libgomp keeps one team per thread that calls torch. Once a process holds more OpenMP threads than cores (a
  second thread ran torch once: a worker's task thread, a model load, a training job), libgomp throttles every
  idle thread's spinning to 100 iterations, and each operation then pays for waking its threads up.

Measured on 2 cores, the shipped ``retnet-ch4:6`` at batch 64, grids/min (``python -m bench.forward_streams``):

- torch's own two threads, from the only thread that ever ran torch: 20,900–21,300;
- the same, from a thread beside another one that ran torch (a worker's task thread): 18,000–19,000;
- the same with ``OMP_WAIT_POLICY=passive`` (no spinning at all): 18,700–18,800;
- two single-threaded streams (this pool), from a thread beside another one that ran torch: 19,700–22,100.

A stream has no barrier and no team: its speed does not depend on the threads around it, and a neighbour costs
it only the time the neighbour takes. :class:`ForwardPool` runs one batch per stream, on ``streams`` threads that
each set torch to one thread when they start.

``torch.set_num_threads`` also sets the default of threads that call torch later for the first time; code that
wants several torch threads in a process that has a pool sets its own count (training does:
:attr:`models.training.TrainConfig.threads`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


class ForwardPool:
    """``streams`` threads, each running torch on one thread: :meth:`map` runs one batch per stream at a time.

    Thread-safe: several callers may map at once; at most ``streams`` forward passes then run together.
    """

    def __init__(self, streams: int) -> None:
        if streams < 1:
            raise ValueError(f"a forward pool needs at least one stream, got {streams}")
        self.streams = streams
        self._threads = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="retnet-forward",
                                           initializer=_one_torch_thread)

    def submit(self, fn: Callable[[T], R], batch: T) -> Future[R]:
        """Run ``fn(batch)`` on the next free stream."""
        return self._threads.submit(fn, batch)

    def map(self, fn: Callable[[T], R], batches: Iterable[T]) -> list[R]:
        """``[fn(b) for b in batches]``, the batches spread over the streams (order kept; the first error raised)."""
        return list(self._threads.map(fn, batches))

    def close(self) -> None:
        """Stop the threads (after the batches already given)."""
        self._threads.shutdown(wait=True)

    def __enter__(self) -> ForwardPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
