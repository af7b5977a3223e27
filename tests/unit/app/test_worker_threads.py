"""Torch threads per worker process: prefork children get one, the solo pool's own process keeps every core."""

from __future__ import annotations

import os

import pytest
import torch
from celery import signals
from celery.concurrency.solo import TaskPool

import worker.celery_app  # noqa: F401  (connects the worker_process_init handler)


@pytest.fixture
def threads() -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_solo_pool_keeps_every_thread_for_inference(threads: int) -> None:
    TaskPool()  # the solo pool (inference and training workers) sends worker_process_init in this process
    assert torch.get_num_threads() == threads


def test_prefork_child_gets_one_thread(threads: int) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked pool child, as billiard makes them
        try:
            signals.worker_process_init.send(sender=None)
            os.write(write, str(torch.get_num_threads()).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"1"
    os.close(read)
