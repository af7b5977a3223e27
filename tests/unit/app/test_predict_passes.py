"""The inference stage's forward passes: even pass sizes, outputs aligned with the parts, errors raised, on CPU
streams and one after the other."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from models.forward_pool import ForwardPool
from worker.pipeline import _Batch, _Item, _on_streams, _overlapped, _VoxelOutcome, pass_size


@pytest.mark.parametrize(("n", "batch", "streams", "size"), [
    (250, 64, 2, 63),   # 4 passes of 63 or fewer, not 64 + 64 + 64 + 58 (a last round on one stream)
    (256, 64, 2, 64),
    (150, 64, 2, 38),   # 2 rounds of 2 passes
    (64, 64, 2, 32),    # one round: each stream a pass
    (7, 4, 3, 3),
    (7, 4, 1, 4),
    (1, 64, 4, 1),
])
def test_pass_size_fills_every_stream_in_as_few_rounds_as_the_batch_allows(n: int, batch: int, streams: int,
                                                                            size: int) -> None:
    assert pass_size(n, batch, streams) == size
    passes = -(-n // size)
    assert size <= batch and (passes % streams == 0 or passes < streams)  # no round leaves a stream idle


def _items(names: list[str]) -> list[_Item]:
    return [_Item(id=n, job_id="j", raw_key=f"k/{n}", name=n, sha=n, model_ref="m:1") for n in names]


def _fetch_stub(failing: set[str], raises_at: str | None = None) -> Any:
    """A part's batch: items named in ``failing`` fail (no grid); a part holding ``raises_at`` raises."""
    def fetch(part: list[_Item]) -> _Batch:
        if raises_at is not None and any(i.name == raises_at for i in part):
            raise OSError("storage unreachable")
        ready = [(i, np.full((2, 2, 2), float(len(i.name))), _VoxelOutcome(i.sha)) for i in part
                 if i.name not in failing]
        return _Batch(ready, None, [(i.id, "bad CIF", "structure") for i in part if i.name in failing])
    return fetch


def _forward(batch: _Batch) -> tuple[list[str], float]:
    time.sleep(0.01)
    return [i.name for i, _, _ in batch.ready], 0.01


@pytest.mark.parametrize("streams", [None, 2])
def test_outputs_line_up_with_the_parts_and_failures_are_kept(streams: int | None) -> None:
    parts = [_items(["a1", "a2"]), _items(["b1", "b2"]), _items(["c1", "c2"])]
    fetch = _fetch_stub(failing={"b1", "b2"})  # the middle part has no grid at all
    if streams is None:
        batches, outs = _overlapped(fetch, _forward, parts)
    else:
        with ForwardPool(streams) as pool:
            batches, outs = _on_streams(pool, fetch, _forward, parts)
    assert [b.failures for b in batches] == [[], [("b1", "bad CIF", "structure"), ("b2", "bad CIF", "structure")], []]
    assert [names for names, _ in outs] == [["a1", "a2"], ["c1", "c2"]]  # one output per part with grids, in order


def test_a_failing_pass_is_raised_and_passes_not_started_are_dropped() -> None:
    started: list[str] = []
    lock = threading.Lock()

    def forward(batch: _Batch) -> tuple[list[str], float]:
        name = batch.ready[0][0].name
        with lock:
            started.append(name)
        if name == "p0":
            raise RuntimeError("forward pass failed")
        time.sleep(0.2)
        return [name], 0.2

    parts = [_items([f"p{k}"]) for k in range(6)]
    with ForwardPool(1) as pool, pytest.raises(RuntimeError, match="forward pass failed"):
        _on_streams(pool, _fetch_stub(set()), forward, parts)
    time.sleep(0.3)
    assert len(started) < len(parts)  # the passes still queued when p0 failed never ran


@pytest.mark.parametrize("streams", [None, 2])
def test_a_failing_fetch_is_raised(streams: int | None) -> None:
    parts = [_items(["a"]), _items(["b"]), _items(["c"])]
    fetch = _fetch_stub(set(), raises_at="b")
    with pytest.raises(OSError, match="storage unreachable"):
        if streams is None:
            _overlapped(fetch, _forward, parts)
        else:
            with ForwardPool(streams) as pool:
                _on_streams(pool, fetch, _forward, parts)
