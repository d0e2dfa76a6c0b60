"""Deterministic cluster simulator for the Raft core (virtual clock, seeded faults)."""
