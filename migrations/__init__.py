"""Alembic migrations of the service database (``alembic -c migrations/alembic.ini upgrade head``)."""
