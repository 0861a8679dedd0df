"""``python -m kiln`` runs the command line."""

from kiln.cli import main

main()
