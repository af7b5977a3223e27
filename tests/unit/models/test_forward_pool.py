"""ForwardPool: order kept, one torch thread per stream, at most ``streams`` passes at once, errors raised."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.forward_pool import ForwardPool, process_threads, process_torch_threads


@pytest.fixture()
def two_torch_threads() -> Iterator[None]:
    """The caller runs torch on two threads (restored after, for the tests that follow)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_map_keeps_order_and_runs_torch_on_one_thread_per_stream(two_torch_threads: None) -> None:
    with ForwardPool(2) as pool:
        seen = pool.map(lambda k: (k, torch.get_num_threads(), threading.current_thread().name), range(6))
    assert [k for k, _, _ in seen] == list(range(6))
    assert {n for _, n, _ in seen} == {1}
    assert all(name.startswith("retnet-forward") for _, _, name in seen)
    assert torch.get_num_threads() == 2  # the caller's own count is its own (OpenMP counts are per thread)


def test_work_beside_a_pool_gets_the_process_threads_back(two_torch_threads: None) -> None:
    with ForwardPool(2) as pool:
        pool.map(lambda _: torch.get_num_threads(), range(2))

        def fresh() -> tuple[int, int]:  # a thread that first calls torch after the pool set the default to 1
            plain = torch.get_num_threads()
            with process_threads():
                return plain, torch.get_num_threads()

        out: list[tuple[int, int]] = []
        t = threading.Thread(target=lambda: out.append(fresh()))
        t.start()
        t.join()
    assert process_torch_threads() >= 1
    assert out == [(1, process_torch_threads())]


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


def test_streams_give_the_same_fused_ensemble_pass(tmp_path: Path) -> None:
    """The shipped kind of model (a fused 3-member ensemble behind LoadedModel), its cached fused weights built by
    concurrent streams: the same predictions, σ and neighbours as one call."""
    from models.artifacts import ModelCard, Target, load_model, save_model
    from models.retnet import RetNet, RetNetEnsemble

    torch.manual_seed(0)
    ensemble = RetNetEnsemble([RetNet(1).eval() for _ in range(3)]).eval()
    folder = save_model(tmp_path / "ens", ensemble, ModelCard(
        name="ens", version="1", standardization={"mean": 1.0, "std": 2.0},
        targets=[Target(name="ch4", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")]))
    model = load_model(folder, device="cpu")
    grids = np.random.default_rng(0).random((8, 25, 25, 25), dtype=np.float32) * 3
    whole = model.predict(grids, batch_size=8)
    with ForwardPool(2) as pool:
        parts = pool.map(lambda g: model.predict(g, batch_size=4), [grids[:4], grids[4:]])
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)
