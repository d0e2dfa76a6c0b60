"""Reference implementations that shipped code is compared with (tests and benchmarks)."""
