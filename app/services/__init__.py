"""Use cases: each owns its transaction and enqueues only after commit."""
