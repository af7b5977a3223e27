"""ForwardPool: order kept, one torch thread per stream, at most ``streams`` passes at once, errors raised."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from models.forward_pool import ForwardPool, available_cpus


def test_map_keeps_order_and_runs_torch_on_one_thread_per_stream() -> None:
    before = torch.get_num_threads()
    with ForwardPool(2) as pool:
        seen = pool.map(lambda k: (k, torch.get_num_threads(), threading.current_thread().name), range(6))
    assert [k for k, _, _ in seen] == list(range(6))
    assert {n for _, n, _ in seen} == {1}
    assert all(name.startswith("retnet-forward") for _, _, name in seen)
    assert torch.get_num_threads() == before  # the caller's own count is its own (OpenMP counts are per thread)


def test_at_most_streams_passes_run_at_once() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def work(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    with ForwardPool(3) as pool:
        callers = [threading.Thread(target=pool.map, args=(work, range(8))) for _ in range(2)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
    assert peak == 3


def test_the_first_error_is_raised() -> None:
    def work(k: int) -> int:
        if k == 2:
            raise ValueError("bad batch")
        return k

    with ForwardPool(2) as pool, pytest.raises(ValueError, match="bad batch"):
        pool.map(work, range(4))


def test_a_pool_needs_a_stream() -> None:
    with pytest.raises(ValueError, match="at least one stream"):
        ForwardPool(0)
    assert available_cpus() >= 1


def test_streams_give_the_same_forward_pass() -> None:
    from models.retnet import RetNet

    torch.manual_seed(0)
    net = RetNet(1).eval()
    grids = torch.from_numpy(np.random.default_rng(0).random((6, 1, 25, 25, 25), dtype=np.float32))
    with torch.inference_mode():
        whole = net(grids)
        with ForwardPool(2) as pool:
            parts = pool.map(net, [grids[:3], grids[3:]])
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)
