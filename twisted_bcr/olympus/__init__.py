"""The C{twistd bcr-olympus} daemon: Olympus as a twistd subcommand."""
