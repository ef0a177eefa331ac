"""The pure protocol core: Replica, Olympus and Client state machines (no I/O)."""
