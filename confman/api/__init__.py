"""The HTTP API (v1) of a Confman node: ``create_app(runtime)`` and ``serve(runtime)``."""

from confman.api.app import HttpServer, create_app, serve
from confman.api.logs import configure_logging

__all__ = ["HttpServer", "configure_logging", "create_app", "serve"]
