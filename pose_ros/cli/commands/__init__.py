"""`pose-ros` subcommands, one module each (auto-discovered)."""
