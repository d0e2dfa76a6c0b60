"""Side-by-side benchmark runner: Confman vs etcd (``python -m benchmarks.compare``)."""
