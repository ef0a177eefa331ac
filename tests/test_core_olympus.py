"""
Tests for L{twisted_bcr.core.olympus}: registration of spares and clients,
the set-up of configuration 0, configuration queries, and the end of a run
(SPEC §2.1, DESIGN §1), driven through a fake environment.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import (
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER_KEY,
    FakeEnvironment,
    Sent,
    client_address,
    client_key,
    key_for,
    open_sealed,
)
from twisted_bcr import crypto
from twisted_bcr.config import parse_case_text
from twisted_bcr.core.common import OLYMPUS
from twisted_bcr.core.olympus import SPARE_SILENCE_LIMIT_S, Olympus
from twisted_bcr.messages import (
    Assignment,
    ConfigurationReply,
    FinalState,
    FinishRun,
    GetConfiguration,
    RegisterClient,
    RegisterReplica,
    ReplicaInfo,
    RunReport,
    Sealed,
    Shutdown,
)

CASE = parse_case_text(
    """
t = 1
num_client = 2
head_timeout = 2000
nonhead_timeout = 4000
checkpt_interval = 5
workload[0] = put('a','b')
workload[1] = get('a')
failures[0,1] = shuttle(0,0),crash()
failures[1,0] = client_request(0,0), drop()
""",
    "olympus_case.txt",
)

DRIVER = "driver"


def spare_address(n: int) -> str:
    """The address of the n'th spare."""
    return f"spare-{n}"


def spare_key(n: int) -> crypto.KeyPair:
    """The key of the n'th spare."""
    return key_for(f"spare {n}")


class OlympusTestCase(SynchronousTestCase):
    """An Olympus for L{CASE} on a fake environment."""

    def setUp(self) -> None:
        self.env = FakeEnvironment(OLYMPUS_ADDRESS)
        self.olympus = Olympus(self.env, CASE, OLYMPUS_KEY)
        self.env.machine = self.olympus
        self.olympus.start()
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))

    def register_spare(self, n: int, key: crypto.KeyPair | None = None) -> None:
        """Spare C{n} registers (sealed with C{key}, default its own)."""
        message = RegisterReplica(spare_address(n), spare_key(n).verify_key_bytes)
        sealed = crypto.seal(key or spare_key(n), spare_address(n), "spare", message)
        self.olympus.receive(spare_address(n), sealed)

    def register_client(self, index: int, key: crypto.KeyPair | None = None) -> None:
        """Client C{index} registers (sealed with C{key}, default its own)."""
        message = RegisterClient(index, client_address(index), client_key(index).verify_key_bytes)
        sealed = crypto.seal(key or client_key(index), client_address(index), f"client {index}", message)
        self.olympus.receive(client_address(index), sealed)

    def set_up(self) -> None:
        """Register three spares and both clients; forget what Olympus sent."""
        for n in range(3):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.env.take()

    def from_olympus(self, sent: Sent) -> object:
        """The body of a message Olympus sealed, after checking its signature and signer."""
        self.assertIsInstance(sent.message, Sealed)
        self.assertEqual(sent.message.signer, OLYMPUS)
        return open_sealed(sent, OLYMPUS_KEY)

    def rejections(self) -> list[str]:
        """Reasons of every rejection Olympus logged."""
        return [e["reason"] for e in self.env.events_named("bcr.rejected")]


class SetUpTests(OlympusTestCase):
    """Configuration 0 is set up once 2t+1 spares and every client have registered."""

    def test_waits_for_spares_and_clients(self) -> None:
        """Three spares and one of two clients are not enough; the second client completes the set-up."""
        for n in range(3):
            self.register_spare(n)
        self.register_client(0)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.configuration)
        self.register_client(1)
        sent = self.env.take()
        self.assertEqual(
            [s.to for s in sent],
            [spare_address(n) for n in range(3)] + [client_address(0), client_address(1)],
        )
        assignments = [self.from_olympus(s) for s in sent[:3]]
        configuration = self.olympus.configuration
        self.assertEqual(configuration.number, 0)
        self.assertEqual(configuration.t, 1)
        self.assertEqual(
            [(r.address, r.verify_key) for r in configuration.replicas],
            [(spare_address(n), spare_key(n).verify_key_bytes) for n in range(3)],
        )
        self.assertEqual(
            [(c.index, c.address, c.verify_key) for c in configuration.clients],
            [(i, client_address(i), client_key(i).verify_key_bytes) for i in range(2)],
        )
        self.assertEqual(
            (configuration.checkpt_interval, configuration.head_timeout_ms, configuration.nonhead_timeout_ms),
            (5, 2000, 4000),
        )
        for index, assignment in enumerate(assignments):
            self.assertIsInstance(assignment, Assignment)
            self.assertEqual(
                (assignment.configuration, assignment.index, assignment.state, assignment.first_slot),
                (configuration, index, {}, 0),
            )
        self.assertEqual([a.failures for a in assignments], ["", "shuttle(0,0),crash()", ""])
        for s in sent[3:]:
            self.assertEqual(self.from_olympus(s), ConfigurationReply(configuration))

    def test_waits_for_spares(self) -> None:
        """Every client and two spares are not enough; the third spare completes the set-up."""
        for index in range(2):
            self.register_client(index)
        for n in range(2):
            self.register_spare(n)
        self.assertEqual(self.env.take(), [])
        self.register_spare(2)
        self.assertEqual(len(self.env.of_type(Assignment)), 3)
        self.assertEqual(len(self.env.of_type(ConfigurationReply)), 2)

    def test_extra_spares_stay_in_the_pool(self) -> None:
        """Spares beyond 2t+1 are not assigned and remain available."""
        for n in range(4):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.assertEqual({s.to for s in self.env.sent if isinstance(s.inner, Assignment)}, {spare_address(n) for n in range(3)})
        self.assertEqual([s.address for s in self.olympus.spares], [spare_address(3)])

    def test_registration_with_mismatched_key(self) -> None:
        """A spare registration sealed with another key than the one it carries is rejected."""
        self.register_spare(0, key=STRANGER_KEY)
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 1)

    def test_client_registration_with_mismatched_key(self) -> None:
        """A client registration sealed with another key than the one it carries is rejected."""
        self.register_client(0, key=STRANGER_KEY)
        self.assertEqual(self.olympus.clients, {})
        self.assertEqual(len(self.rejections()), 1)

    def test_client_key_cannot_change(self) -> None:
        """A second registration of a client index with another key is rejected."""
        self.register_client(0)
        message = RegisterClient(0, "elsewhere", STRANGER_KEY.verify_key_bytes)
        self.olympus.receive("elsewhere", crypto.seal(STRANGER_KEY, "elsewhere", "client 0", message))
        self.assertEqual(self.olympus.clients[0].address, client_address(0))

    def test_client_outside_case(self) -> None:
        """A client index the case does not have is rejected."""
        self.register_client(5)
        self.assertEqual(self.olympus.clients, {})

    def test_spare_registered_twice(self) -> None:
        """A spare repeating its registration (it does while it waits) stays one spare."""
        self.register_spare(0)
        self.register_spare(0)
        self.assertEqual(len(self.olympus.spares), 1)
        self.assertEqual(len(self.env.events_named("bcr.spare")), 1)

    def test_restarted_spare_replaces_old(self) -> None:
        """A new process at a spare's address, with a new key, replaces the old one."""
        self.register_spare(0)
        message = RegisterReplica(spare_address(0), STRANGER_KEY.verify_key_bytes)
        self.olympus.receive(
            spare_address(0), crypto.seal(STRANGER_KEY, spare_address(0), "spare", message)
        )
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), STRANGER_KEY.verify_key_bytes)]
        )

    def test_silent_spare_forgotten(self) -> None:
        """A spare that stops re-registering is not put into a configuration."""
        self.register_spare(0)
        self.env.clock.advance(SPARE_SILENCE_LIMIT_S + 1)
        for n in range(1, 4):
            self.register_spare(n)
        for index in range(CASE.num_client):
            self.register_client(index)
        assert self.olympus.configuration is not None
        self.assertNotIn(
            spare_address(0), [r.address for r in self.olympus.configuration.replicas]
        )
        self.assertEqual(len(self.env.events_named("bcr.spare_lost")), 1)

    def test_unsealed_input(self) -> None:
        """Olympus rejects anything that is not a sealed control message."""
        self.olympus.receive("somebody", RegisterReplica("x", b"k" * 32))
        self.assertEqual(len(self.rejections()), 1)

    def test_hostile_signer_names(self) -> None:
        """Malformed or unknown signer names are rejected, never raised."""
        self.set_up()
        for signer in ["client x", "client", "replica zero", "replica 0", "replica 0.9",
                       "replica 0.-1", "nobody"]:
            sealed = crypto.seal(STRANGER_KEY, "somebody", signer, GetConfiguration(0))
            self.olympus.receive("somebody", sealed)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 7)


class ConfigurationQueryTests(OlympusTestCase):
    """Clients ask Olympus for the current configuration."""

    def test_answers(self) -> None:
        """A registered client's query is answered with the current configuration, sealed."""
        self.set_up()
        sealed = crypto.seal(client_key(1), client_address(1), "client 1", GetConfiguration(1))
        self.olympus.receive(client_address(1), sealed)
        [sent] = self.env.take()
        self.assertEqual(sent.to, client_address(1))
        self.assertEqual(self.from_olympus(sent), ConfigurationReply(self.olympus.configuration))

    def test_reregistration_answered(self) -> None:
        """A client registering again after the set-up gets the configuration."""
        self.set_up()
        self.register_client(0)
        [sent] = self.env.take()
        self.assertEqual(self.from_olympus(sent), ConfigurationReply(self.olympus.configuration))

    def test_before_set_up(self) -> None:
        """A query before configuration 0 exists is rejected."""
        self.register_client(0)
        self.env.take()
        sealed = crypto.seal(client_key(0), client_address(0), "client 0", GetConfiguration(0))
        self.olympus.receive(client_address(0), sealed)
        self.assertEqual(self.env.take(), [])

    def test_query_with_wrong_key(self) -> None:
        """A query claiming to be from client 0 but signed with another key is rejected."""
        self.set_up()
        sealed = crypto.seal(STRANGER_KEY, client_address(0), "client 0", GetConfiguration(0))
        self.olympus.receive(client_address(0), sealed)
        self.assertEqual(self.env.take(), [])


class FinishTests(OlympusTestCase):
    """At the end of a run Olympus retires the replicas and reports to the driver."""

    def finish(self, key: crypto.KeyPair = OLYMPUS_KEY, signer: str = OLYMPUS) -> None:
        """The driver (or whoever holds C{key}) asks Olympus to finish."""
        sealed = crypto.seal(key, DRIVER, signer, FinishRun("every client has finished"))
        self.olympus.receive(DRIVER, sealed)

    def final_state(self, index: int, state: dict[str, str], signer_index: int | None = None) -> None:
        """Replica C{index} of configuration 0 reports C{state}, sealed by replica C{signer_index}."""
        signer = index if signer_index is None else signer_index
        message = FinalState(0, index, state, 3)
        sealed = crypto.seal(spare_key(signer), spare_address(signer), f"replica 0.{signer}", message)
        self.olympus.receive(spare_address(signer), sealed)

    def test_finish_run(self) -> None:
        """Shutdown goes to every replica; the report follows once all final states are in."""
        self.set_up()
        self.register_spare(3)
        self.finish()
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [spare_address(n) for n in range(4)])
        self.assertEqual([self.from_olympus(s) for s in sent], [Shutdown(0)] * 3 + [Shutdown(-1)])
        self.final_state(0, {"a": "b"})
        self.final_state(2, {"a": "b"})
        self.assertEqual(self.env.take(), [])
        self.final_state(1, {"a": "b"})
        [sent] = self.env.take()
        self.assertEqual(sent.to, DRIVER)
        report = self.from_olympus(sent)
        self.assertIsInstance(report, RunReport)
        self.assertEqual(report.configuration, 0)
        self.assertEqual([f.index for f in report.final_states], [0, 1, 2])
        self.assertEqual(report.errors, ())
        self.assertEqual(json.loads(report.reconfigurations_json), [])
        self.assertEqual(self.env.active_timers(), {})

    def test_finish_run_deadline(self) -> None:
        """Without every final state, the report comes after twice the step timeout and names the missing replicas."""
        self.set_up()
        self.finish()
        self.env.take()
        self.final_state(0, {"a": "b"})
        self.env.clock.advance(7.999)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(0.001)
        [sent] = self.env.take()
        report = self.from_olympus(sent)
        self.assertEqual([f.index for f in report.final_states], [0])
        [error] = report.errors
        self.assertIn("[1, 2]", error)

    def test_finish_run_from_client(self) -> None:
        """A finish request sealed by a client is rejected."""
        self.set_up()
        self.finish(key=client_key(0), signer="client 0")
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 1)

    def test_finish_run_from_replica(self) -> None:
        """A finish request sealed by a replica is rejected."""
        self.set_up()
        self.finish(key=spare_key(0), signer="replica 0.0")
        self.assertEqual(self.env.take(), [])

    def test_finish_run_with_wrong_key(self) -> None:
        """A finish request naming Olympus but sealed with another key is rejected."""
        self.set_up()
        self.finish(key=STRANGER_KEY)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 1)

    def test_finish_run_twice(self) -> None:
        """A second finish request while finishing is rejected."""
        self.set_up()
        self.finish()
        self.env.take()
        self.finish()
        self.assertEqual(self.env.take(), [])

    def test_final_state_for_another_replica(self) -> None:
        """A replica cannot report the final state of another position."""
        self.set_up()
        self.finish()
        self.env.take()
        self.final_state(0, {"forged": "x"}, signer_index=1)
        self.final_state(1, {"a": "b"})
        self.final_state(2, {"a": "b"})
        self.assertEqual(self.env.take(), [])
        self.final_state(0, {"a": "b"})
        report = self.from_olympus(self.env.take()[0])
        self.assertEqual([f.state for f in report.final_states], [{"a": "b"}] * 3)

    def test_final_state_from_client(self) -> None:
        """A final state sealed by a client is rejected."""
        self.set_up()
        self.finish()
        self.env.take()
        message = FinalState(0, 0, {"forged": "x"}, 3)
        self.olympus.receive(client_address(0), crypto.seal(client_key(0), client_address(0), "client 0", message))
        self.olympus.timer_expired("finish")
        report = self.from_olympus(self.env.take()[0])
        self.assertEqual(report.final_states, ())

    def test_final_state_outside_finish(self) -> None:
        """A final state before the run is finishing is rejected."""
        self.set_up()
        self.final_state(0, {"a": "b"})
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 1)

    def test_finish_without_configuration(self) -> None:
        """Finishing before configuration 0 exists retires the spares and reports at once."""
        self.register_spare(0)
        self.finish()
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [spare_address(0), DRIVER])
        report = self.from_olympus(sent[1])
        self.assertEqual((report.configuration, report.final_states), (-1, ()))
