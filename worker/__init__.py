"""Celery workers: queues ``voxels`` (CPU pool), ``inference`` (batched, GPU when present), ``training``."""
