"""``run_worker(queues, concurrency)``: a Celery worker process for the given queues (scaled mode).

``python -m worker.main -Q voxels,inference -c 2`` does the same from a shell.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

from app.core.config import get_settings
from app.core.queue import INFERENCE, QUEUES, TRAINING, VOXELS


def worker_argv(queues: list[str], concurrency: int | None, *, loglevel: str = "INFO") -> tuple[list[str], int]:
    """Celery worker arguments: inference and training → solo pool (one task at a time in the worker's own
    process: the model stays loaded, CUDA is never forked, and the consumer reconnects after a broker restart —
    the threads pool did not: after a lost connection its consumer stopped for good), voxels → prefork."""
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise ValueError(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}")
    cpu = os.cpu_count() or 1
    if queues == [INFERENCE]:
        pool, default = "solo", 1
    elif queues == [TRAINING]:
        pool, default = "solo", 1
    else:
        pool, default = "prefork", cpu
    conc = concurrency or default
    if pool == "solo":
        conc = 1
    name = "-".join(queues)
    argv = ["worker", "-Q", ",".join(queues), "-c", str(conc), "--pool", pool, "-n", f"{name}.{os.getpid()}@"
            f"{socket.gethostname()}", "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    return argv, conc


def run_worker(queues: list[str], concurrency: int | None = None, *, loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process until it is stopped (checks the database is migrated first)."""
    from app.core.cpu import short_openmp_spin

    short_openmp_spin()  # before torch is imported: idle OpenMP threads must not take the voxel workers' cores
    from app.db.migrate import check_migrated
    from worker.celery_app import create_worker_app
    from worker.runtime import limit_torch_threads

    settings = get_settings()
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_migrated(settings.db_url)
    argv, conc = worker_argv(queues, concurrency, loglevel=loglevel)
    app = create_worker_app(settings)
    if INFERENCE in queues:
        # One chunk at hand while one runs its forward passes (chunks are already batches of up to
        # pipeline.inference_chunk_max items): more would keep a big screening's chunks from a second inference worker.
        app.conf.worker_prefetch_multiplier = 2
    if VOXELS in queues and INFERENCE not in queues:
        limit_torch_threads(1)
    app.worker_main(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m worker.main -Q voxels -c 4``."""
    parser = argparse.ArgumentParser(description="RetNet Service Celery worker")
    parser.add_argument("-Q", "--queues", default=",".join(QUEUES), help="comma-separated queues")
    parser.add_argument("-c", "--concurrency", type=int, default=None)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    run_worker([q.strip() for q in args.queues.split(",") if q.strip()], args.concurrency, loglevel=args.loglevel)


if __name__ == "__main__":
    main()
