"""The REST service: ``create_app(engine, settings)`` in ``batchyard.server.app``.

This package imports nothing at import time, so that the client can share ``server.schemas``
without FastAPI installed.
"""
