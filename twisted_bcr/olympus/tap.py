# -*- test-case-name: tests.test_processes -*-
"""
C{twistd bcr-olympus}: options and service wiring for Olympus.

    twistd -n --pidfile= bcr-olympus --case etc/cases/failure_free.txt \\
        --admission /etc/bcr/admitted --listen tcp:7000:interface=127.0.0.1 --log-dir runs/x

Only the identities listed in the admission file (docs/SECURITY.md) may
register as spares or clients; the file is read again whenever it changes.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from twisted_bcr.admission import AdmissionError, AdmissionFile, parse_admission_file
from twisted_bcr.config import CaseError
from twisted_bcr.core.olympus import Olympus
from twisted_bcr.faults import PluginError, load_case
from twisted_bcr.net.daemon import NodeOptions, check_name, load_or_create_key, node_service
from twisted_bcr.net.node import TcpNode


class Options(NodeOptions):
    """Options of C{twistd bcr-olympus}."""

    command = "bcr-olympus"
    synopsis = "--case FILE --admission FILE [options]"

    optParameters = [
        ["case", None, None, "The case file (SPEC §10) this Olympus serves. Required."],
        [
            "admission", None, None,
            "The admission file: the replica and client identity keys admitted "
            "(re-read whenever it changes). Required.",
        ],
        ["name", None, None, "Log file stem [default: CASE-olympus, CASE the case file's name]."],
        [
            "key-file", None, None,
            "Olympus's long-term signing key (hex seed; FILE.pub holds the public "
            "key); created if missing [default: olympus.key in the log directory].",
        ],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["case"] is None:
            raise usage.UsageError("--case FILE is required")
        try:
            self["parsed-case"], _ = load_case(self["case"], self["fault-plugins"])
        except (CaseError, PluginError) as e:
            raise usage.UsageError(str(e)) from None
        if self["name"] is None:
            stem = os.path.splitext(os.path.basename(self["case"]))[0]
            self["name"] = f"{stem}-olympus"
        check_name(self["name"])
        if self["key-file"] is None:
            self["key-file"] = os.path.join(self["log-dir"], "olympus.key")
        self["key"] = load_or_create_key(self["key-file"])
        if self["admission"] is None:
            raise usage.UsageError("--admission FILE is required")
        try:
            parse_admission_file(self["admission"])
        except AdmissionError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """Olympus on one listening node."""
    case = options["parsed-case"]

    def olympus(env: TcpNode) -> Olympus:
        def admission_error(problem: str) -> None:
            env.log.error("{problem}", problem=problem, event="bcr.admission_error")

        admission = AdmissionFile(options["admission"], admission_error)
        return Olympus(env, case, options["key"], admission, metrics=env.metrics)

    return node_service(
        options, "olympus", options["name"], olympus, options["key"], role="olympus"
    )
