"""Deterministic cluster simulator for the Raft core (virtual clock, seeded faults).

- ``network``: the seeded network (loss, duplication, delay and reordering, partitions);
- ``scenarios``: fault profiles, including targeted mixes for the tests' broken variants;
- ``checks``: the safety invariants, judged incrementally after every event;
- ``model``: a simulated member (disk, core, state machine) and a run's result;
- ``execute``: each member's runtime: its Ready plan executed on disk, network, state machine;
- ``faults``: the fault schedule (partitions, crashes, pauses, transfers, membership);
- ``cluster``: one run: nodes with their disks, clients, the virtual clock (on the two above);
- ``liveness``: the calm phase after the faults, and its bounds in ticks;
- ``runner``: many runs on several processes, and their summary;
- ``__main__``: the command line (``python -m confman.sim --help``).
"""
