"""The replicated state machine: commands, deterministic apply into SQLite, queries."""
