"""`python -m search ...` is `auttention-search ...` (how a submitted Ray job runs the shipped sources)."""

from .cli import main

main(prog_name="auttention-search")
