"""Verification: linearizability checking, workloads and fault injection."""
