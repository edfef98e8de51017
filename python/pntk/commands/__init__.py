"""Subcommands of the pntk CLI, one module per feature (see pntk.cli.COMMAND_MODULES)."""
