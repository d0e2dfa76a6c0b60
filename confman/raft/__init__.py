"""The Raft consensus core: a deterministic state machine with no I/O of its own."""
