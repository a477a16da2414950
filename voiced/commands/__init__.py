"""Subcommands of the `voiced` CLI, one module each."""
