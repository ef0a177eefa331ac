"""The C{twistd bcr-replica} daemon: one replica process, started as a spare."""
