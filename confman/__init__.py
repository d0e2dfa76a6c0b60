"""Confman: a strongly consistent, highly available configuration service."""

__version__ = "0.1.0"
