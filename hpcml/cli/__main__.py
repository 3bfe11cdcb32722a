"""`python -m hpcml.cli …` runs the `hpcml` command."""

from hpcml.cli.app import main

main()
