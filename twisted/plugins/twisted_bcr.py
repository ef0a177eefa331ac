"""twistd subcommands of twisted_bcr: lazy ServiceMakers, nothing else."""

from twisted.application.service import ServiceMaker

bcrOlympus = ServiceMaker(
    "BCR Olympus",
    "twisted_bcr.olympus.tap",
    "Byzantine Chain Replication configuration service (Olympus).",
    "bcr-olympus",
)
bcrReplica = ServiceMaker(
    "BCR replica",
    "twisted_bcr.replica.tap",
    "One Byzantine Chain Replication replica (starts as a spare).",
    "bcr-replica",
)
