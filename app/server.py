"""``serve()``: run the API with uvicorn (embedded mode: migrate first, workers in-process)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: str | Path | None = None,
          log_level: str = "info") -> None:
    """Start the HTTP server.

    Embedded mode (the default: no broker configured) migrates the SQLite database automatically and runs the
    Celery workers in threads of this process. Scaled mode checks the database is migrated and only serves HTTP.
    """
    import uvicorn

    from app.core.config import get_settings
    from app.db.migrate import upgrade
    from app.main import create_app

    if data_dir is not None:
        os.environ["RETNET_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.embedded:
        upgrade(settings.db_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, workers=1)
