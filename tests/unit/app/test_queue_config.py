"""Celery/kombu settings derived from the service settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu.transport.redis import Channel

from app.core.config import Settings
from app.core.queue import celery_config


def _redis_options(tmp_path: Path, visibility_timeout_s: int) -> dict[str, object]:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/13",
                        visibility_timeout_s=visibility_timeout_s)
    return celery_config(settings)["broker_transport_options"]


@pytest.mark.parametrize(("visibility", "mutex"), [(8, 8), (60, 60), (3600, 300), (2, 5)])
def test_restore_mutex_of_a_dead_worker_expires_with_the_visibility_timeout(
        tmp_path: Path, visibility: int, mutex: int) -> None:
    """A worker SIGKILLed while holding kombu's restore mutex must not block redelivery for kombu's 300 s."""
    options = _redis_options(tmp_path, visibility)
    assert options["visibility_timeout"] == visibility
    assert options["unacked_mutex_expire"] == mutex
    assert options["unacked_restore_interval"] <= max(1, visibility)


def test_every_redis_transport_option_is_one_kombu_reads(tmp_path: Path) -> None:
    """A misspelt option would be ignored silently by kombu."""
    assert set(_redis_options(tmp_path, 8)) <= set(Channel.from_transport_options)


def test_memory_broker_has_no_redis_options(tmp_path: Path) -> None:
    options = celery_config(Settings(data_dir=tmp_path))["broker_transport_options"]
    assert "visibility_timeout" not in options and "unacked_mutex_expire" not in options


def test_chunks_spread_over_eight_tasks_within_the_stage_caps(tmp_path: Path) -> None:
    from app.core.queue import chunks

    settings = Settings(data_dir=tmp_path)
    ids = [str(i) for i in range(2000)]
    voxels = chunks(ids, settings)
    inference = chunks(ids, settings, settings.pipeline.inference_chunk_max)
    assert [len(c) for c in voxels[:2]] == [64, 64] and len(voxels) == 32  # capped by pipeline.chunk_max
    assert [len(c) for c in inference] == [250] * 8  # ceil(2000 / 8), under inference_chunk_max (256)
    assert [len(c) for c in chunks(ids[:20], settings)] == [8, 8, 4]  # chunk_min keeps tiny tasks away
    assert sum(inference, []) == ids and sum(voxels, []) == ids  # every item once, in order
    # inference tasks hold at least one forward pass (inference.batch_size), within their cap
    assert [len(c) for c in chunks(ids[:300], settings, 256, settings.inference.batch_size)] == [64] * 4 + [44]
    assert [len(c) for c in chunks(ids[:300], settings, 32, 64)] == [32] * 9 + [12]


def test_inference_tasks_are_sent_holding_at_least_one_forward_pass(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import nullcontext

    from app.core import queue

    sent: list[tuple[str, int]] = []

    class Recorder:
        def producer_or_acquire(self) -> Any:
            return nullcontext(None)

        def send_task(self, name: str, args: tuple[list[str]], **_: Any) -> None:
            sent.append((name, len(args[0])))

    monkeypatch.setattr(queue, "client", lambda settings=None: Recorder())
    settings = Settings(data_dir=tmp_path)
    ids = [str(i) for i in range(300)]
    queue.enqueue_predict(ids, settings)
    assert [n for _, n in sent] == [64, 64, 64, 64, 44]  # not ceil(300 / 8) = 38: passes of 19 on two streams
    sent.clear()
    queue.enqueue_voxelize(ids, settings)
    assert [n for _, n in sent] == [38] * 7 + [34]  # the voxels stage still spreads over eight tasks
    sent.clear()
    queue.enqueue_predict(ids, settings, whole=True)  # a voxels task's chunk: one task, cut only above the cap
    assert [n for _, n in sent] == [256, 44]
    assert {name for name, _ in sent} == {queue.TASK_PREDICT}
