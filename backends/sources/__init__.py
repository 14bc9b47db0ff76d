"""Sources: what warroom reads (each module's readings, rules and its own actions)."""
