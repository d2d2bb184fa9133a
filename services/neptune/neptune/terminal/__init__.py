"""The pieces of ``neptune``, the terminal client (``neptune.cli``): a thin client of the gateway's REST API that
imports nothing of the services, only the standard library, httpx and rich."""
