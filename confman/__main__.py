"""``python -m confman`` is the ``confman`` command."""

from confman.cli import main

main(prog_name="confman")
