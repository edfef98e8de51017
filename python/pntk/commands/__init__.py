"""Subcommands of the pntk CLI: every module here defines register(subparsers)."""
