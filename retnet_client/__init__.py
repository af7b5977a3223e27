"""Python client of the RetNet Service HTTP API (no torch, no service code: ``httpx`` only).

>>> from retnet_client import Client                                    # doctest: +SKIP
>>> client = Client("http://127.0.0.1:8000", api_key=None)              # doctest: +SKIP
>>> client.predict("KEGZOL04_clean.cif")["prediction"]                  # doctest: +SKIP
>>> rows = client.screen("cifs/")                                       # doctest: +SKIP
"""

from retnet_client.client import FINAL, Client
from retnet_client.errors import JobFailedError, RetNetError, WaitTimeoutError
from retnet_client.retry import RetryPolicy
from retnet_client.rows import Rows, to_dataframe

__all__ = ["FINAL", "Client", "JobFailedError", "RetNetError", "RetryPolicy", "Rows", "WaitTimeoutError",
           "to_dataframe"]
__version__ = "0.1.0"
