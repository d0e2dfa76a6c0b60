"""Test-only fault injection for real nodes: deliberate bugs patched into the runtime of a
node process started through `tests.faults.buggy_node` (never part of the shipped code)."""
