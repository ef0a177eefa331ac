"""
The built-in triggers of SPEC §11.1: the m'th received message of a kind
(for client c, for the kinds counted per client).
"""

from __future__ import annotations

from attrs import frozen
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_bcr.interfaces import ITrigger


@implementer(IPlugin, ITrigger)
@frozen
class CountingTrigger:
    """C{name(c, m)} or C{name(m)}: the m'th counted message (of client c)."""

    name: str
    counted: str
    per_client: bool

    @property
    def arity(self) -> int:
        return 2 if self.per_client else 1

    def fires(self, client: int | None, number: int, args: tuple[int, ...]) -> bool:
        if self.per_client:
            return args == (client, number)
        return args == (number,)


client_request = CountingTrigger("client_request", "client_request", True)
forwarded_request = CountingTrigger("forwarded_request", "forwarded_request", True)
shuttle = CountingTrigger("shuttle", "shuttle", True)
result_shuttle = CountingTrigger("result_shuttle", "result_shuttle", True)
wedge_request = CountingTrigger("wedge_request", "wedge_request", False)
new_configuration = CountingTrigger("new_configuration", "new_configuration", False)
checkpoint = CountingTrigger("checkpoint", "checkpoint", False)
completed_checkpoint = CountingTrigger("completed_checkpoint", "completed_checkpoint", False)
get_running_state = CountingTrigger("get_running_state", "get_running_state", False)
catch_up = CountingTrigger("catch_up", "catch_up", False)
