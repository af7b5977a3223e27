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

``torch.set_num_threads`` also sets the default of threads that call torch later for the first time: once a pool
exists, a new thread would run torch on one thread. Work that wants the process's threads (a training or design
job) runs under :func:`process_threads`, which sets them for its own thread only (OpenMP counts are per thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Torch's CPU thread count of this process before the first pool set the default to one (None: no pool yet).
_process_threads: int | None = None


def process_torch_threads() -> int:
    """Torch's CPU threads for this process's own work: torch's default (the physical cores, or ``OMP_NUM_THREADS``;
    1 in a prefork child, which sets it so) as it was before a pool's streams changed it."""
    import torch

    return _process_threads or torch.get_num_threads()


@contextmanager
def process_threads() -> Iterator[None]:
    """Run the block on :func:`process_torch_threads` torch threads in this thread; the count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(process_torch_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


class ForwardPool:
    """``streams`` threads, each running torch on one thread: :meth:`map` runs one batch per stream at a time.

    Thread-safe: several callers may map at once; at most ``streams`` forward passes then run together.
    """

    def __init__(self, streams: int) -> None:
        global _process_threads
        if streams < 1:
            raise ValueError(f"a forward pool needs at least one stream, got {streams}")
        if _process_threads is None:
            import torch

            _process_threads = torch.get_num_threads()
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
        """Stop the threads: passes not started are dropped, running ones finish."""
        self._threads.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ForwardPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
