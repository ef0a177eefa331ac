# -*- test-case-name: tests.test_processes -*-
"""
C{twistd bcr-replica}: options and service wiring for one replica process.

The process starts as a spare with a fresh key pair, registers with Olympus
under its long-term identity key (which the operator admitted there,
docs/SECURITY.md), serves the one configuration position Olympus assigns
it, and exits with status 0 when Olympus retires it.

    twistd -n --pidfile= bcr-replica --olympus 127.0.0.1:7000 \\
        --olympus-key runs/x/olympus.key.pub --identity-key /var/lib/bcr/identity.key \\
        --log-dir runs/x
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from twisted_bcr import crypto
from twisted_bcr.core.replica import Replica, fault_plan_factory
from twisted_bcr.net.daemon import (
    NodeOptions,
    check_address,
    check_name,
    load_or_create_key,
    node_service,
    read_verify_key_option,
)
from twisted_bcr.peers import Peer


class Options(NodeOptions):
    """Options of C{twistd bcr-replica}."""

    command = "bcr-replica"
    synopsis = "--olympus HOST:PORT --olympus-key HEX|PATH --identity-key FILE [options]"

    optParameters = [
        ["olympus", None, None, "Olympus's address, HOST:PORT. Required."],
        [
            "olympus-key", None, None,
            "Olympus's public key: 64 hex digits, or the path of a .pub file. Required.",
        ],
        [
            "identity-key", None, None,
            "This daemon's long-term identity key (hex seed, mode 0600; FILE.pub holds "
            "the public key to admit at Olympus); created if missing. Required.",
        ],
        ["name", None, None, "Names this process and its log files [default: replica-PID]."],
    ]
    optFlags = [
        [
            "enable-fault-injection", None,
            "Accept assignments that carry failures[c,r] (test runs only).",
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        check_address("olympus", self["olympus"])
        self["olympus-key-bytes"] = read_verify_key_option("olympus-key", self["olympus-key"])
        if self["identity-key"] is None:
            raise usage.UsageError("--identity-key FILE is required")
        self["identity"] = load_or_create_key(self["identity-key"], "identity-key")
        if self["name"] is None:
            self["name"] = f"replica-{os.getpid()}"
        check_name(self["name"])
        if self["fault-plugins"] and not self["enable-fault-injection"]:
            raise usage.UsageError("--fault-plugins needs --enable-fault-injection")
        self["fault-registry"] = (
            self.fault_registry() if self["enable-fault-injection"] else None
        )


def makeService(options: Options) -> IService:
    """A spare replica, with a fresh key pair, on one listening node."""
    key = crypto.KeyPair.generate()
    return node_service(
        options,
        options["name"],
        options["name"],
        lambda env: Replica(
            env,
            key,
            Peer(options["olympus"], options["olympus-key-bytes"]),
            identity=options["identity"],
            fault_injection=options["enable-fault-injection"],
            faults_factory=(
                fault_plan_factory(options["fault-registry"])
                if options["fault-registry"] is not None
                else None
            ),
            metrics=env.metrics,
        ),
        key,
        role="replica",
    )
