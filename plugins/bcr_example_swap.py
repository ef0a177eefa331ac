"""
An example third-party fault plugin: C{swap_result_stmts()}.

Copy this file to start your own failure or trigger.  This folder
(C{plugins/}) is where experiment plugins go.  It is NOT a Python package,
so it has no C{__init__.py}: it is a directory of Twisted plugin modules.
The built-in faults live in the installed package C{twisted_bcr.faultplugins}.
Nothing here is loaded unless you ask for it:

    bcr simulate etc/cases/mycase.txt --fault-plugins plugins
    bcr run etc/cases/mycase.txt --fault-plugins plugins
    twistd -n bcr-olympus ... --fault-plugins plugins
    twistd -n bcr-replica ... --enable-fault-injection --fault-plugins plugins

After that a case file can use the failure by name, paired with any trigger:

    failures[0,2] = shuttle(0,0), swap_result_stmts()

Olympus and every replica that may carry the failure must get the same
C{--fault-plugins} directories: Olympus checks the case file's names, and a
replica builds its fault plan from them.  C{bcr run} passes its directories
on to every process it starts.

B{What swap_result_stmts() does.}  In the next result proof this replica
sends (a result shuttle to its predecessor or a result message to a
client), the first two result statements change places.  Both are still
validly signed, but each now sits at the other's chain position, and a
statement is checked with the key of the replica at its position.  So the
predecessor finds a badly signed statement 0 and asks Olympus for a
reconfiguration.  At the tail, as in the line above (t = 1, so replica 2 is
the tail), the same swapped proof also goes to the client.  The client can
then verify only 2t - 1 statements.  With t = 1 that is fewer than the t + 1
it needs, so it waits, and Olympus hands it the result once the
reconfiguration is over.

B{Writing your own.}  A module here defines module-level objects that
provide both L{twisted.plugin.IPlugin} and one of the interfaces in
L{twisted_bcr.interfaces}:

  - L{IFailure}: C{name} (used in case files), C{arity} (how many integer
    arguments it takes), C{stage}, and C{fire(misbehave, args, text)}.
    C{fire} acts on the replica only through C{misbehave}, an
    L{IMisbehave}.  C{text} is the pair as written, e.g.
    C{"result_shuttle(0,0), swap_result_stmts()"}, for log lines.
  - L{ITrigger}: C{name}, C{arity}, C{counted} (which kind of received
    message the replica counts for it), C{per_client}, and
    C{fires(client, number, args)}.  The replica does the counting (SPEC
    §11.1).  A trigger only says whether the C{number}'th message of its
    kind matches.

C{stage} places a failure among the failures that fire on the same
message: 0 crash, 1 sleep, 2 change the state or the slot
(C{misbehave.apply}, C{misbehave.skip_slot}), 3 arm a tampering with a later
outgoing message (C{misbehave.arm}), 4 drop (C{misbehave.drop}).

C{misbehave.arm(text, point, tamper)} changes the next value the replica
produces at C{point}: it calls C{tamper(value, misbehave)} once and uses
what it returns.  Arming the same failure again replaces the earlier arming.
These are the points and the values they pass:

  - C{'own_statements'}: C{(signed order statement, signed result
    statement)} that it adds for its next request.
  - C{'result_message'}: its next L{twisted_bcr.messages.ResultMessage} to
    a client.
  - C{'result_proof'}: the result proof (a tuple of signed result
    statements in chain order) of its next outgoing result shuttle or
    result message.
  - C{'wedged'}: the history entries of its next wedged message.
  - C{'completed_checkpoint'}: the signed checkpoint statements of its
    next completed-checkpoint proof.

Use C{misbehave.decode}, C{misbehave.sign} and C{misbehave.corrupt} to read,
re-sign or spoil a signed statement, and C{attrs.evolve} to change a field.

Rules (STYLE.md §2): importing the module must do nothing except define
things.  Its basename must not be used by any other plugin module, the
built-ins included (prefix it, as here).  Names must not clash with a
built-in or another plugin (L{twisted_bcr.faults.load_registry} refuses
that).  Twisted writes a C{dropin.cache} next to the modules; it may be
deleted at any time.  A module that fails to import stops the run with one
line naming the file.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_bcr.interfaces import IFailure, IMisbehave

#: Arm a tampering with a later outgoing message (see IFailure.stage).
ARM = 3


@implementer(IPlugin, IFailure)
@frozen
class SwapResultStmts:
    """
    swap_result_stmts(): the first two statements of its next outgoing
    result proof change places.
    """

    name: str = "swap_result_stmts"
    arity: int = 0
    stage: int = ARM

    def fire(self, misbehave: IMisbehave, args: tuple[int, ...], text: str) -> None:
        def swap(proof: tuple[Any, ...], misbehave: IMisbehave) -> tuple[Any, ...]:
            if len(proof) < 2:
                misbehave.log(f"{text}: a result proof of {len(proof)} statement(s), unchanged")
                return proof
            return (proof[1], proof[0], *proof[2:])

        misbehave.arm(text, "result_proof", swap)


swap_result_stmts = SwapResultStmts()
