"""Persistence: SQLAlchemy 2 tables, engine/session factory, migrations helpers."""
