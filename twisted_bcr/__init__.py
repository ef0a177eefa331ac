"""twisted_bcr: Byzantine Chain Replication (van Renesse, Ho, Schiper) on Twisted."""

__version__ = "0.1.0"
