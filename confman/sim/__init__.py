"""Deterministic cluster simulator for the Raft core (virtual clock, seeded faults).

- ``network``: the seeded network (loss, duplication, delay and reordering, partitions);
- ``scenarios``: fault profiles, including targeted mixes for the core's deliberate bugs;
- ``checks``: the safety invariants, judged incrementally after every event;
- ``model``: a simulated member (disk, core, state machine) and a run's result;
- ``cluster``: one run: nodes with their disks, clients, faults, the virtual clock;
- ``liveness``: the calm phase after the faults, and its bounds in ticks;
- ``runner``: many runs on several processes, and their summary;
- ``__main__``: the command line (``python -m confman.sim --help``).
"""
