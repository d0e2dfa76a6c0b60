"""Durable storage: the write-ahead log and snapshot files."""
