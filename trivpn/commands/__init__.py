"""Subcommands of the ``trivpn`` CLI, one module each."""
