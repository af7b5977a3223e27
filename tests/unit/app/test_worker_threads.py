"""Torch threads per worker process: prefork children get one, the solo pool's own process keeps every core."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from billiard import get_context
from celery import signals
from celery.concurrency.solo import TaskPool

import worker.celery_app  # noqa: F401  (connects the worker_process_init handler)


@pytest.fixture
def threads() -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_solo_pool_keeps_every_thread_for_inference(threads: int) -> None:
    TaskPool()  # the solo pool (inference and training workers) sends worker_process_init in this process
    assert torch.get_num_threads() == threads


def _pool_child(write: int) -> None:
    signals.worker_process_init.send(sender=None)  # what billiard's pool children run first
    os.write(write, str(torch.get_num_threads()).encode())


def test_prefork_child_gets_one_thread(threads: int) -> None:
    read, write = os.pipe()
    child = get_context("fork").Process(target=_pool_child, args=(write,), name="ForkPoolWorker-1")
    child.start()  # a child process as the prefork pool makes them (billiard, forked)
    child.join(30)
    os.close(write)
    assert child.exitcode == 0
    assert os.read(read, 16) == b"1"
    os.close(read)
