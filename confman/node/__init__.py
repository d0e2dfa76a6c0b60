"""The asyncio runtime of one member: core, clock, transport, WAL and state machine."""
