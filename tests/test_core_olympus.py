"""
Tests for L{twisted_bcr.core.olympus}: registration of spares (by
challenge and response, admitted identities only) and clients, the set-up
of configuration 0 and its announcement once every replica is ready,
configuration queries, the end of a run (SPEC §2.1, DESIGN §1), and what
Olympus takes from whom (docs/SECURITY.md), driven through a fake
environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.fakes import (
    OLYMPUS_ADDRESS,
    OLYMPUS_KEY,
    STRANGER,
    STRANGER_KEY,
    FakeEnvironment,
    Sent,
    client_address,
    client_key,
    key_for,
    open_sealed,
)
from twisted_bcr import crypto
from twisted_bcr.admission import AdmittedKeys
from twisted_bcr.config import parse_case_text
from twisted_bcr.core.common import (
    MAX_CLIENT_MESSAGE,
    MAX_MESSAGE,
    MAX_STRANGER_MESSAGE,
    OLYMPUS,
)
from twisted_bcr.core.olympus import (
    CHALLENGE_LIFETIME_S,
    CHALLENGES_PER_KEY,
    MAX_CHALLENGES_PER_IDENTITY,
    MAX_SPARES,
    REFUSED_KEYS_NAMED,
    SPARE_SILENCE_LIMIT_S,
    Olympus,
)
from twisted_bcr.interfaces import IAdmission
from twisted_bcr.messages import (
    Assignment,
    ConfigurationReply,
    FaultFired,
    FinalState,
    FinishRun,
    GetConfiguration,
    Placement,
    Quiesce,
    Quiescent,
    Ready,
    ReconfigurationRequest,
    RegisterClient,
    RegisterReplica,
    RegistrationBinding,
    RegistrationChallenge,
    RegistrationResponse,
    ReplicaInfo,
    RunReport,
    Sealed,
    Shutdown,
    Wedged,
    WedgeRequest,
)
from twisted_bcr.peers import Peer

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

#: The driver holds Olympus's own key: it is the operator's process.
DRIVER = Peer("driver", OLYMPUS_KEY.verify_key_bytes)

#: How many spare identities the tests' admission admits.
ADMITTED_SPARES = 8
#: Client indexes the admission admits: more than the case has, so that an
#: admitted index outside the case can be tried.
ADMITTED_CLIENTS = 6


def spare_address(n: int) -> str:
    """The address of the n'th spare."""
    return f"spare-{n}"


def spare_key(n: int) -> crypto.KeyPair:
    """The fresh key of the n'th spare."""
    return key_for(f"spare {n}")


def spare_identity(n: int) -> crypto.KeyPair:
    """The admitted long-term identity of the n'th spare's daemon."""
    return key_for(f"spare identity {n}")


def spare_peer(n: int) -> Peer:
    """Spare C{n} as the binding authenticates it."""
    return Peer(spare_address(n), spare_key(n).verify_key_bytes)


def admitted_keys() -> AdmittedKeys:
    """What the operator admitted for these tests: spares' identities and clients' keys."""
    return AdmittedKeys(
        replicas=frozenset(spare_identity(n).verify_key_bytes for n in range(ADMITTED_SPARES)),
        clients={i: client_key(i).verify_key_bytes for i in range(ADMITTED_CLIENTS)},
    )


@implementer(IAdmission)
class ChangingAdmission:
    """
    An admission list the test can change while Olympus runs, as an
    operator edits the admission file (L{AdmittedKeys} is immutable).
    """

    def __init__(self, replicas: Iterable[bytes], clients: Mapping[int, bytes]) -> None:
        self.replicas = set(replicas)
        self.clients = dict(clients)

    def admits_replica(self, identity_key: bytes) -> bool:
        return identity_key in self.replicas

    def client_key(self, index: int) -> bytes | None:
        return self.clients.get(index)

    def revoke_replica(self, identity_key: bytes) -> None:
        self.replicas.discard(identity_key)


class OlympusTestCase(SynchronousTestCase):
    """An Olympus for L{CASE} on a fake environment."""

    def setUp(self) -> None:
        self.env = FakeEnvironment(OLYMPUS_ADDRESS)
        self.admission: IAdmission = self.make_admission()
        self.olympus = Olympus(self.env, CASE, OLYMPUS_KEY, self.admission)
        self.env.machine = self.olympus
        self.olympus.start()
        self.addCleanup(lambda: self.assertEqual(self.env.format_errors, []))

    def make_admission(self) -> IAdmission:
        """The admission Olympus asks; by default an immutable L{AdmittedKeys}."""
        return admitted_keys()

    # Sending to Olympus ---------------------------------------------------

    def seal(
        self,
        key: crypto.KeyPair,
        sender: str,
        signer: str,
        message: object,
        *,
        epoch: bytes | None = None,
        recipient: bytes = OLYMPUS_KEY.verify_key_bytes,
    ) -> Sealed:
        """C{message} sealed by C{key} for Olympus, in its epoch unless told otherwise."""
        return crypto.seal(
            key, sender, signer, message, recipient=recipient,
            epoch=self.olympus.epoch if epoch is None else epoch,
        )

    def send(
        self,
        peer: Peer,
        key: crypto.KeyPair,
        signer: str,
        message: object,
        *,
        epoch: bytes | None = None,
    ) -> None:
        """C{peer} sends C{message} sealed with C{key} (its own, if honest)."""
        self.olympus.receive(peer, self.seal(key, peer.address, signer, message, epoch=epoch))

    def new_messages(self, action: object) -> list[Sent]:
        """Run C{action}; what Olympus sent meanwhile, taken out of C{env.sent}."""
        before = len(self.env.sent)
        action()  # type: ignore[operator]
        sent = self.env.sent[before:]
        del self.env.sent[before:]
        return sent

    # Spares ------------------------------------------------------------------

    def request_registration(
        self,
        n: int,
        *,
        key: crypto.KeyPair | None = None,
        identity: crypto.KeyPair | None = None,
        address: str | None = None,
        peer: Peer | None = None,
        seal_key: crypto.KeyPair | None = None,
    ) -> list[Sent]:
        """
        Spare C{n} (or whoever C{peer} is) sends the first message of a
        registration, with an empty epoch as a spare does before it heard
        from Olympus; return (and take) what Olympus sent back.
        """
        key = key or spare_key(n)
        identity = identity or spare_identity(n)
        address = address or spare_address(n)
        peer = peer or Peer(address, key.verify_key_bytes)
        message = RegisterReplica(address, key.verify_key_bytes, identity.verify_key_bytes)
        sealed = self.seal(seal_key or key, peer.address, "spare", message, epoch=b"")
        return self.new_messages(lambda: self.olympus.receive(peer, sealed))

    def challenge_of(self, sent: list[Sent], to: Peer) -> RegistrationChallenge:
        """The one challenge in C{sent}, after checking it is sealed by Olympus for C{to}."""
        [challenge] = sent
        self.assertEqual(challenge.to, to)
        self.assertEqual(
            (challenge.message.recipient, challenge.message.epoch),
            (to.key, self.olympus.epoch),
        )
        body = self.from_olympus(challenge)
        self.assertIsInstance(body, RegistrationChallenge)
        assert isinstance(body, RegistrationChallenge)
        return body

    def response(
        self,
        nonce: bytes,
        key: crypto.KeyPair,
        identity: crypto.KeyPair,
        address: str,
        *,
        epoch: bytes | None = None,
    ) -> RegistrationResponse:
        """The answer to C{nonce}: C{identity} binds C{key} at C{address} to this boot."""
        binding = RegistrationBinding(
            OLYMPUS_KEY.verify_key_bytes,
            self.olympus.epoch if epoch is None else epoch,
            nonce, key.verify_key_bytes, address,
        )
        return RegistrationResponse(nonce, crypto.sign(identity, binding).signature)

    def register_spare(
        self,
        n: int,
        *,
        key: crypto.KeyPair | None = None,
        identity: crypto.KeyPair | None = None,
    ) -> None:
        """Spare C{n} registers: registration, challenge, signed response."""
        key = key or spare_key(n)
        identity = identity or spare_identity(n)
        peer = Peer(spare_address(n), key.verify_key_bytes)
        sent = self.request_registration(n, key=key, identity=identity)
        challenge = self.challenge_of(sent, peer)
        answer = self.response(challenge.nonce, key, identity, spare_address(n))
        self.send(peer, key, "spare", answer)

    def ready(self, index: int, configuration: int = 0, n: int | None = None) -> None:
        """The replica at C{index} (spare C{n}, by default spare C{index}) says it is ready."""
        n = index if n is None else n
        self.send(spare_peer(n), spare_key(n), f"replica {configuration}.{index}",
                  Ready(configuration, index))

    # Clients -----------------------------------------------------------------

    def register_client(
        self, index: int, key: crypto.KeyPair | None = None, peer: Peer | None = None
    ) -> None:
        """Client C{index} registers (sealed with C{key}, default its own)."""
        message = RegisterClient(
            index, client_address(index).address, client_key(index).verify_key_bytes
        )
        sealed = self.seal(
            key or client_key(index), client_address(index).address, f"client {index}",
            message, epoch=b"",
        )
        self.olympus.receive(peer or client_address(index), sealed)

    def set_up(self) -> None:
        """
        Register three spares and both clients, let every replica say it is
        ready; forget what Olympus sent.
        """
        for n in range(3):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        for index in range(3):
            self.ready(index)
        self.assertEqual(self.olympus.announced, 0)
        self.env.take()

    # Inspecting --------------------------------------------------------------

    def from_olympus(self, sent: Sent) -> object:
        """The body of a message Olympus sealed, after checking its signature, signer and recipient."""
        self.assertIsInstance(sent.message, Sealed)
        self.assertEqual(sent.message.signer, OLYMPUS)
        self.assertEqual(sent.message.recipient, sent.to.key)
        self.assertEqual(sent.message.epoch, self.olympus.epoch)
        return open_sealed(sent, OLYMPUS_KEY)

    def rejections(self) -> list[str]:
        """Reasons of every rejection Olympus logged."""
        return [e["reason"] for e in self.env.events_named("bcr.rejected")]


class SetUpTests(OlympusTestCase):
    """
    Configuration 0 is set up once 2t+1 spares and every client have
    registered, and announced to the clients once every replica is ready.
    """

    def test_waits_for_spares_and_clients(self) -> None:
        """Three spares and one of two clients are not enough; the second client completes the set-up."""
        for n in range(3):
            self.register_spare(n)
        self.register_client(0)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.configuration)
        self.register_client(1)
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [spare_peer(n) for n in range(3)])
        assignments = [self.from_olympus(s) for s in sent]
        configuration = self.olympus.configuration
        self.assertEqual(configuration.number, 0)
        self.assertEqual(configuration.t, 1)
        self.assertEqual(
            [(r.address, r.verify_key) for r in configuration.replicas],
            [(spare_address(n), spare_key(n).verify_key_bytes) for n in range(3)],
        )
        self.assertEqual(
            [(c.index, c.address, c.verify_key) for c in configuration.clients],
            [(i, client_address(i).address, client_key(i).verify_key_bytes) for i in range(2)],
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
        self.assertEqual([s.message.configuration for s in sent], [0, 0, 0])
        self.assertEqual([a.failures for a in assignments], ["", "shuttle(0,0),crash()", ""])
        # The clients hear of it once every replica is ready.
        self.ready(0)
        self.ready(2)
        self.assertEqual(self.env.take(), [])
        self.ready(1)
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [client_address(0), client_address(1)])
        for s in sent:
            self.assertEqual(self.from_olympus(s), ConfigurationReply(configuration))
        self.assertEqual(self.olympus.announced, 0)
        self.assertNotIn("announce", self.env.active_timers())

    def test_waits_for_spares(self) -> None:
        """Every client and two spares are not enough; the third spare completes the set-up."""
        for index in range(2):
            self.register_client(index)
        for n in range(2):
            self.register_spare(n)
        self.assertEqual(self.env.take(), [])
        self.register_spare(2)
        self.assertEqual(len(self.env.of_type(Assignment)), 3)
        self.assertEqual(self.env.of_type(ConfigurationReply), [])
        for index in range(3):
            self.ready(index)
        self.assertEqual(len(self.env.of_type(ConfigurationReply)), 2)

    def test_announced_after_the_step_timeout(self) -> None:
        """A replica that never says it is ready delays the announcement by one step timeout, no more."""
        for n in range(3):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.env.take()
        self.ready(0)
        self.ready(1)
        self.env.clock.advance(CASE.step_timeout_s - 0.001)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(0.001)
        self.assertEqual(
            [s.to for s in self.env.take()], [client_address(0), client_address(1)]
        )
        [warning] = self.env.events_named("bcr.unready")
        self.assertEqual(warning["unready"], [2])
        # A late ready announces nothing twice.
        self.ready(2)
        self.assertEqual(self.env.take(), [])

    def test_extra_spares_stay_in_the_pool(self) -> None:
        """Spares beyond 2t+1 are not assigned and remain available."""
        for n in range(4):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.assertEqual({s.to for s in self.env.sent if isinstance(s.inner, Assignment)}, {spare_peer(n) for n in range(3)})
        self.assertEqual([s.address for s in self.olympus.spares], [spare_address(3)])

    def test_registration_with_mismatched_key(self) -> None:
        """A spare registration sealed with another key than the connection's is rejected."""
        sent = self.request_registration(0, seal_key=STRANGER_KEY)
        self.assertEqual(sent, [])
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 1)

    def test_registration_of_another_key(self) -> None:
        """A stranger cannot register a key it does not hold, even sealing honestly with its own."""
        sent = self.request_registration(0, peer=STRANGER, seal_key=STRANGER_KEY)
        self.assertEqual(sent, [])
        self.assertEqual(self.olympus.spares, [])
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped register_replica"), reason)

    def test_client_registration_with_mismatched_key(self) -> None:
        """A client registration sealed with another key than the connection's is rejected."""
        self.register_client(0, key=STRANGER_KEY)
        self.assertEqual(self.olympus.clients, {})
        self.assertEqual(len(self.rejections()), 1)

    def test_client_registration_of_another_key(self) -> None:
        """A stranger cannot register client 0's key, which it does not hold."""
        self.register_client(0, key=STRANGER_KEY, peer=STRANGER)
        self.assertEqual(self.olympus.clients, {})
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped register_client"), reason)

    def test_client_key_cannot_change(self) -> None:
        """A second registration of a client index with another key is rejected."""
        self.register_client(0)
        message = RegisterClient(0, "elsewhere", STRANGER_KEY.verify_key_bytes)
        elsewhere = Peer("elsewhere", STRANGER_KEY.verify_key_bytes)
        self.send(elsewhere, STRANGER_KEY, "client 0", message, epoch=b"")
        self.assertEqual(self.olympus.clients[0].address, client_address(0).address)
        self.assertEqual(self.olympus.clients[0].verify_key, client_key(0).verify_key_bytes)
        self.assertEqual(len(self.rejections()), 1)

    def test_client_outside_case(self) -> None:
        """A client index the case does not have is rejected, even if admitted."""
        self.assertIsNotNone(self.admission.client_key(5))
        self.register_client(5)
        self.assertEqual(self.olympus.clients, {})
        [reason] = self.rejections()
        self.assertIn("not in the case", reason)

    def test_spare_registered_twice(self) -> None:
        """A spare repeating its registration (it does while it waits) stays one spare, unchallenged."""
        self.register_spare(0)
        self.env.clock.advance(10)
        self.assertEqual(self.request_registration(0), [])
        self.assertEqual(len(self.olympus.spares), 1)
        self.assertEqual(len(self.env.events_named("bcr.spare")), 1)
        # Repeating it keeps the spare alive past the silence limit.
        self.env.clock.advance(SPARE_SILENCE_LIMIT_S - 5)
        self.register_spare(1)
        self.assertEqual(
            [s.address for s in self.olympus.spares], [spare_address(0), spare_address(1)]
        )

    def test_restarted_spare_replaces_old(self) -> None:
        """A new process at a spare's address, with the same identity and a new key, replaces the old one."""
        self.register_spare(0)
        restarted = key_for("spare 0, restarted")
        self.register_spare(0, key=restarted)
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), restarted.verify_key_bytes)]
        )

    def test_one_spare_per_identity(self) -> None:
        """
        One identity registering a second key (at another address) replaces
        its first spare: an identity is one daemon, however often it restarts.
        """
        self.register_spare(0)
        moved = key_for("spare 0, moved")
        peer = Peer("spare-0-moved", moved.verify_key_bytes)
        sent = self.request_registration(0, key=moved, address=peer.address)
        challenge = self.challenge_of(sent, peer)
        self.send(peer, moved, "spare",
                  self.response(challenge.nonce, moved, spare_identity(0), peer.address))
        self.assertEqual(self.olympus.spares, [ReplicaInfo(peer.address, moved.verify_key_bytes)])

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
        self.olympus.receive(
            spare_peer(0),
            RegisterReplica(spare_address(0), spare_key(0).verify_key_bytes,
                            spare_identity(0).verify_key_bytes),
        )
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 1)

    def test_hostile_signer_names(self) -> None:
        """Malformed or unknown signer names are rejected, never raised."""
        self.set_up()
        for signer in ["client x", "client", "replica zero", "replica 0", "replica 0.9",
                       "replica 0.-1", "nobody"]:
            self.send(STRANGER, STRANGER_KEY, signer, GetConfiguration(0))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 7)

    def test_epoch_drawn_at_construction(self) -> None:
        """Olympus's epoch is 16 random bytes from its environment, and every challenge names it."""
        self.assertEqual(len(self.olympus.epoch), 16)
        other = Olympus(FakeEnvironment("elsewhere"), CASE, OLYMPUS_KEY, admitted_keys())
        self.assertNotEqual(other.epoch, self.olympus.epoch)


class RegistrationTests(OlympusTestCase):
    """
    A spare registers by proving an admitted identity: Olympus challenges
    the key it registers, at the address it claims, and the identity signs
    the binding of that key and address to this boot of Olympus.
    """

    def test_challenge_response(self) -> None:
        """The registration alone makes no spare; the signed response does."""
        sent = self.request_registration(0)
        challenge = self.challenge_of(sent, spare_peer(0))
        self.assertEqual(len(challenge.nonce), 32)
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(self.env.events_named("bcr.spare"), [])
        self.send(spare_peer(0), spare_key(0), "spare",
                  self.response(challenge.nonce, spare_key(0), spare_identity(0), spare_address(0)))
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), spare_key(0).verify_key_bytes)]
        )
        [event] = self.env.events_named("bcr.spare")
        self.assertEqual(event["identity_key"], spare_identity(0).verify_key_bytes.hex())
        self.assertEqual(self.rejections(), [])

    def test_fresh_nonce_per_challenge(self) -> None:
        """Every challenge carries a nonce of its own."""
        nonces = {
            self.challenge_of(self.request_registration(n), spare_peer(n)).nonce
            for n in range(4)
        }
        self.assertEqual(len(nonces), 4)

    def test_one_key_cannot_make_olympus_connect_everywhere(self) -> None:
        """
        Each challenge goes to the address the registration claims, so one
        key re-registering under 100 addresses gets CHALLENGES_PER_KEY
        challenges, not 100 connections to addresses of its choice.
        """
        key = key_for("outsider")
        sent: list[Sent] = []
        for n in range(100):
            address = f"127.0.0.1:{10000 + n}"
            sent += self.request_registration(
                0, key=key, address=address, peer=Peer(address, key.verify_key_bytes)
            )
        self.assertEqual(len(sent), CHALLENGES_PER_KEY)
        self.assertLessEqual(len(self.rejections()), 10)

    def test_response_signed_by_another_identity(self) -> None:
        """A response signed by an identity other than the one registered makes no spare."""
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        for identity in (spare_identity(1), STRANGER_KEY):
            self.send(spare_peer(0), spare_key(0), "spare",
                      self.response(challenge.nonce, spare_key(0), identity, spare_address(0)))
            # A key gets a new challenge only so often.
            self.env.clock.advance(CHALLENGE_LIFETIME_S)
            challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 2)

    def test_response_binding_another_boot(self) -> None:
        """A signature over another epoch's binding (a replay across boots) makes no spare."""
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        answer = self.response(
            challenge.nonce, spare_key(0), spare_identity(0), spare_address(0), epoch=b"o" * 16
        )
        self.send(spare_peer(0), spare_key(0), "spare", answer)
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 1)

    def test_response_sealed_in_another_epoch(self) -> None:
        """A response must be sealed in this boot's epoch: an empty one is for registrations only."""
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        answer = self.response(challenge.nonce, spare_key(0), spare_identity(0), spare_address(0))
        for epoch in (b"", b"o" * 16):
            self.send(spare_peer(0), spare_key(0), "spare", answer, epoch=epoch)
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 2)
        self.assertTrue(all("epoch" in reason for reason in self.rejections()))
        # The challenge is still open for the right answer.
        self.send(spare_peer(0), spare_key(0), "spare", answer)
        self.assertEqual(len(self.olympus.spares), 1)

    def test_unsolicited_response(self) -> None:
        """A response from a key Olympus never challenged is dropped."""
        answer = self.response(b"n" * 32, spare_key(0), spare_identity(0), spare_address(0))
        self.send(spare_peer(0), spare_key(0), "spare", answer)
        self.assertEqual(self.olympus.spares, [])
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped registration_response"), reason)

    def test_response_answers_once(self) -> None:
        """A challenge is used up by its answer: the same response again registers nothing new."""
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        answer = self.response(challenge.nonce, spare_key(0), spare_identity(0), spare_address(0))
        self.send(spare_peer(0), spare_key(0), "spare", answer)
        self.send(spare_peer(0), spare_key(0), "spare", answer)
        self.assertEqual(len(self.olympus.spares), 1)
        self.assertEqual(len(self.env.events_named("bcr.spare")), 1)
        self.assertEqual(len(self.rejections()), 1)

    def test_outsider_cannot_become_a_spare(self) -> None:
        """
        An outsider with valid keys of its own, none admitted, gets no
        challenge and no spare however often it registers: 5,000 fresh keys
        leave nothing behind.
        """
        for n in range(5000):
            key = key_for(f"outsider {n}")
            peer = Peer("outsider", key.verify_key_bytes)
            sent = self.request_registration(
                0, key=key, identity=key, address=peer.address, peer=peer
            )
            self.assertEqual(sent, [])
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.olympus._challenges), 0)
        # Rate-limited per sender address: a burst of 10 lines, then a
        # line now and then that counts what was held back.
        self.assertEqual(len(self.rejections()), 10)
        self.assertTrue(all("not admitted" in reason for reason in self.rejections()))
        self.env.clock.advance(1)
        self.request_registration(0, key=STRANGER_KEY, identity=STRANGER_KEY, address="outsider",
                                  peer=Peer("outsider", STRANGER_KEY.verify_key_bytes))
        [*_, last] = self.env.events_named("bcr.rejected")
        self.assertEqual(last["suppressed"], 4990)
        # The real spares still get in.
        for n in range(3):
            self.register_spare(n)
        self.assertEqual(len(self.olympus.spares), 3)

    def test_outsider_naming_an_admitted_identity(self) -> None:
        """
        Identity keys are public: an outsider may name an admitted one, and
        is challenged, but cannot answer.  However many times it tries, at
        most MAX_CHALLENGES_PER_IDENTITY challenges are outstanding and it
        never becomes a spare; the real spare still gets in.
        """
        admitted = spare_identity(0)
        challenged = 0
        for n in range(5000):
            key = key_for(f"outsider {n}")
            peer = Peer("outsider", key.verify_key_bytes)
            sent = self.request_registration(
                0, key=key, identity=admitted, address="outsider", peer=peer
            )
            for challenge in sent:
                challenged += 1
                body = self.challenge_of([challenge], peer)
                # Its best try: the binding signed by a key it does hold.
                self.send(peer, key, "spare",
                          self.response(body.nonce, key, STRANGER_KEY, "outsider"))
            self.assertLessEqual(len(self.olympus._challenges), MAX_CHALLENGES_PER_IDENTITY)
            if n % 100 == 99:
                self.env.clock.advance(1)
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(self.env.events_named("bcr.spare"), [])
        # Each wrong answer frees its challenge, so each try was challenged.
        self.assertEqual(challenged, 5000)
        # Every challenge was answered (wrongly) and so used up.
        self.assertEqual(len(self.olympus._challenges), 0)
        self.register_spare(0)
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), spare_key(0).verify_key_bytes)]
        )

    def test_unanswered_challenges_are_bounded(self) -> None:
        """
        Unanswered challenges are bounded per admitted identity, never in
        total: 5,000 outsiders naming the admitted identities and never
        answering hold at most MAX_CHALLENGES_PER_IDENTITY of each, and
        cannot keep a real spare out, which registers at once.
        """
        identities = [spare_identity(i) for i in range(3)]
        for n in range(5000):
            key = key_for(f"outsider {n}")
            peer = Peer("outsider", key.verify_key_bytes)
            self.request_registration(
                0, key=key, identity=identities[n % 3], address="outsider", peer=peer
            )
            self.assertLessEqual(
                len(self.olympus._challenges), MAX_CHALLENGES_PER_IDENTITY * len(identities)
            )
        self.assertEqual(
            len(self.olympus._challenges), MAX_CHALLENGES_PER_IDENTITY * len(identities)
        )
        self.assertEqual(self.olympus.spares, [])
        self.register_spare(1)
        self.assertEqual(len(self.olympus.spares), 1)

    def test_outsider_cannot_register_as_client_0(self) -> None:
        """
        A client index belongs to the one key admitted for it: an outsider
        registering as client 0 with its own key is refused, before and after
        the real client registered.
        """
        message = RegisterClient(0, STRANGER.address, STRANGER_KEY.verify_key_bytes)
        self.send(STRANGER, STRANGER_KEY, "client 0", message, epoch=b"")
        self.assertEqual(self.olympus.clients, {})
        self.register_client(0)
        self.send(STRANGER, STRANGER_KEY, "client 0", message, epoch=b"")
        self.assertEqual(self.olympus.clients[0].verify_key, client_key(0).verify_key_bytes)
        self.assertEqual(len(self.rejections()), 2)
        self.assertTrue(all("not admitted" in reason for reason in self.rejections()))
        # Nor does it get a configuration by asking as client 0.
        self.set_up()
        self.send(STRANGER, STRANGER_KEY, "client 0", GetConfiguration(0))
        self.assertEqual(self.env.take(), [])

    def test_captured_response_replayed_from_another_key(self) -> None:
        """
        A captured response is of no use on another connection: resent as
        it was, its seal does not match the connection's key; resealed, it
        answers no challenge of that key (and a challenge of its own has
        another nonce, and the identity's signature names the spare's key).
        """
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        answer = self.response(challenge.nonce, spare_key(0), spare_identity(0), spare_address(0))
        captured = self.seal(spare_key(0), spare_address(0), "spare", answer)
        # As it was captured, from the stranger's connection.
        self.olympus.receive(STRANGER, captured)
        # Resealed by the stranger, which was never challenged.
        self.send(STRANGER, STRANGER_KEY, "spare", answer)
        # The stranger gets a challenge of its own, naming the spare's identity ...
        stranger_challenge = self.challenge_of(
            self.request_registration(0, key=STRANGER_KEY, address=STRANGER.address, peer=STRANGER),
            STRANGER,
        )
        self.assertNotEqual(stranger_challenge.nonce, challenge.nonce)
        # ... and answers it with the captured response,
        self.send(STRANGER, STRANGER_KEY, "spare", answer)
        # and again, with the captured signature under its own nonce.
        stranger_challenge = self.challenge_of(
            self.request_registration(0, key=STRANGER_KEY, address=STRANGER.address, peer=STRANGER),
            STRANGER,
        )
        self.send(STRANGER, STRANGER_KEY, "spare",
                  RegistrationResponse(stranger_challenge.nonce, answer.signature))
        self.assertEqual(self.olympus.spares, [])
        self.assertEqual(len(self.rejections()), 4)
        # The spare's own answer still registers it, and only it.
        self.olympus.receive(spare_peer(0), captured)
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), spare_key(0).verify_key_bytes)]
        )

    def test_cannot_register_an_address_it_does_not_serve(self) -> None:
        """
        A spare claiming another spare's address is challenged at that
        address under its own key, which the binding delivers only to a
        process holding that key: the process really there never answers,
        and the spare there stays registered.
        """
        self.register_spare(0)
        sent = self.request_registration(1, address=spare_address(0), peer=spare_peer(1))
        [challenge] = sent
        self.assertEqual(challenge.to, Peer(spare_address(0), spare_key(1).verify_key_bytes))
        self.assertNotEqual(challenge.to, spare_peer(0))
        self.assertNotEqual(challenge.to, spare_peer(1))
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), spare_key(0).verify_key_bytes)]
        )
        # An answer binding its real address does not fit the challenge.
        body = self.challenge_of(sent, challenge.to)
        self.send(spare_peer(1), spare_key(1), "spare",
                  self.response(body.nonce, spare_key(1), spare_identity(1), spare_address(1)))
        self.assertEqual(
            self.olympus.spares, [ReplicaInfo(spare_address(0), spare_key(0).verify_key_bytes)]
        )
        self.assertEqual(len(self.rejections()), 1)

    def test_not_admitted_identity(self) -> None:
        """A registration naming an identity that is not admitted gets no challenge."""
        sent = self.request_registration(0, identity=key_for("unlisted identity"))
        self.assertEqual(sent, [])
        self.assertEqual(self.olympus.spares, [])
        [reason] = self.rejections()
        self.assertIn("not admitted", reason)

    def test_spares_are_bounded(self) -> None:
        """At most MAX_SPARES spares are registered; more are refused until some are used."""
        many = AdmittedKeys(
            replicas=frozenset(
                key_for(f"pool identity {n}").verify_key_bytes for n in range(MAX_SPARES + 1)
            ),
        )
        self.olympus = Olympus(self.env, CASE, OLYMPUS_KEY, many)
        self.env.machine = self.olympus
        for n in range(MAX_SPARES):
            self.register_spare(n, identity=key_for(f"pool identity {n}"))
        self.assertEqual(len(self.olympus.spares), MAX_SPARES)
        sent = self.request_registration(
            MAX_SPARES, identity=key_for(f"pool identity {MAX_SPARES}")
        )
        self.assertEqual(sent, [])
        self.assertEqual(len(self.olympus.spares), MAX_SPARES)
        self.assertIn(f"{MAX_SPARES} spares already registered", self.rejections()[-1])


class RevocationTests(OlympusTestCase):
    """The operator revokes an identity: Olympus asks its admission on every decision."""

    def make_admission(self) -> IAdmission:
        keys = admitted_keys()
        return ChangingAdmission(keys.replicas, keys.clients)

    def test_double_is_an_admission(self) -> None:
        """The test double provides IAdmission, like AdmittedKeys."""
        self.assertTrue(verifyObject(IAdmission, self.admission))
        self.assertTrue(verifyObject(IAdmission, admitted_keys()))

    def test_revoked_spare_forgotten(self) -> None:
        """A registered spare whose identity is revoked is never put into a configuration."""
        for n in range(4):
            self.register_spare(n)
        assert isinstance(self.admission, ChangingAdmission)
        self.admission.revoke_replica(spare_identity(0).verify_key_bytes)
        for index in range(2):
            self.register_client(index)
        assert self.olympus.configuration is not None
        self.assertEqual(
            [r.address for r in self.olympus.configuration.replicas],
            [spare_address(n) for n in (1, 2, 3)],
        )
        self.assertNotIn(spare_peer(0), [s.to for s in self.env.sent])
        [lost] = self.env.events_named("bcr.spare_lost")
        self.assertIn("no longer admitted", lost["why"])
        self.assertEqual(self.olympus.spares, [])

    def test_revoked_before_the_response(self) -> None:
        """An identity revoked between challenge and response registers no spare."""
        challenge = self.challenge_of(self.request_registration(0), spare_peer(0))
        assert isinstance(self.admission, ChangingAdmission)
        self.admission.revoke_replica(spare_identity(0).verify_key_bytes)
        self.send(spare_peer(0), spare_key(0), "spare",
                  self.response(challenge.nonce, spare_key(0), spare_identity(0), spare_address(0)))
        self.assertEqual(self.olympus.spares, [])
        [reason] = self.rejections()
        self.assertIn("no longer admitted", reason)

    def test_revoked_identity_cannot_register_again(self) -> None:
        """After revocation the identity's registrations get no challenge."""
        assert isinstance(self.admission, ChangingAdmission)
        self.admission.revoke_replica(spare_identity(0).verify_key_bytes)
        self.assertEqual(self.request_registration(0), [])
        self.assertEqual(self.olympus.spares, [])


class ReadyTests(OlympusTestCase):
    """Only the replica Olympus placed at a position may say that position is ready."""

    def assigned(self, spares: int = 3) -> None:
        """Configuration 0 is assigned to spares 0 to 2 (of C{spares}); nobody is ready yet."""
        for n in range(spares):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.env.take()

    def test_stranger_says_ready(self) -> None:
        """A stranger's Ready for every position announces nothing."""
        self.assigned()
        for index in range(3):
            self.send(STRANGER, STRANGER_KEY, f"replica 0.{index}", Ready(0, index))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.olympus.announced, -1)
        self.assertEqual(len(self.rejections()), 3)

    def test_replica_says_another_is_ready(self) -> None:
        """Replica 0.0 cannot say that position 1 is ready."""
        self.assigned()
        self.ready(0)
        self.ready(2)
        self.ready(1, n=0)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(self.olympus.announced, -1)
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped ready"), reason)
        self.ready(1)
        self.assertEqual(self.olympus.announced, 0)

    def test_spare_not_placed_says_ready(self) -> None:
        """A registered spare that was not placed is no replica."""
        self.assigned(spares=4)
        self.assertEqual([s.address for s in self.olympus.spares], [spare_address(3)])
        self.ready(0)
        self.ready(1)
        self.send(spare_peer(3), spare_key(3), "replica 0.2", Ready(0, 2))
        self.assertEqual(self.olympus.announced, -1)
        self.assertEqual(len(self.rejections()), 1)


class ControlFromOutsidersTests(OlympusTestCase):
    """Reconfiguration requests and wedged messages count only from the chain's replicas."""

    def test_outsider_reconfiguration_request(self) -> None:
        """A stranger's reconfiguration request wedges nothing."""
        self.set_up()
        request = ReconfigurationRequest(0, "replica 0.1", "the head lies", ())
        self.send(STRANGER, STRANGER_KEY, "replica 0.1", request)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(self.env.events_named("bcr.reconfiguration_request"), [])
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped reconfiguration_request"), reason)

    def test_unregistered_spare_reconfiguration_request(self) -> None:
        """A spare is not a replica: its reconfiguration request is dropped too."""
        self.set_up()
        self.register_spare(3)
        self.send(spare_peer(3), spare_key(3), "replica 0.0",
                  ReconfigurationRequest(0, "replica 0.0", "why not", ()))
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)

    def test_replica_reconfiguration_request(self) -> None:
        """The same request from a replica of the configuration wedges it."""
        self.set_up()
        self.send(spare_peer(1), spare_key(1), "replica 0.1",
                  ReconfigurationRequest(0, "replica 0.1", "the head lies", ()))
        self.assertEqual(
            [(s.to, self.from_olympus(s)) for s in self.env.take()],
            [(spare_peer(n), WedgeRequest(0)) for n in range(3)],
        )
        self.assertIsNotNone(self.olympus.reconfiguring)

    def test_outsider_wedged(self) -> None:
        """During a reconfiguration a stranger's wedged message, or one for another position, is dropped."""
        self.set_up()
        self.send(spare_peer(1), spare_key(1), "replica 0.1",
                  ReconfigurationRequest(0, "replica 0.1", "the head lies", ()))
        self.env.take()
        self.send(STRANGER, STRANGER_KEY, "replica 0.0", Wedged(0, 0, (), None))
        self.send(spare_peer(1), spare_key(1), "replica 0.1", Wedged(0, 0, (), None))
        state = self.olympus.reconfiguring
        assert state is not None
        self.assertEqual((state.wedged, state.invalid), ({}, {}))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 2)
        # Replica 0.0's own wedged message counts.
        self.send(spare_peer(0), spare_key(0), "replica 0.0", Wedged(0, 0, (), None))
        self.assertEqual(list(state.wedged), [0])

    def test_sealed_for_another_recipient(self) -> None:
        """A message a replica sealed for someone else is not for Olympus."""
        self.set_up()
        request = ReconfigurationRequest(0, "replica 0.1", "the head lies", ())
        sealed = self.seal(spare_key(1), spare_address(1), "replica 0.1", request,
                           recipient=spare_key(0).verify_key_bytes)
        self.olympus.receive(spare_peer(1), sealed)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        [reason] = self.rejections()
        self.assertIn("another recipient", reason)

    def test_replayed_from_another_boot(self) -> None:
        """A replica's request sealed in another epoch (or none) is dropped."""
        self.set_up()
        request = ReconfigurationRequest(0, "replica 0.1", "the head lies", ())
        for epoch in (b"o" * 16, b""):
            self.send(spare_peer(1), spare_key(1), "replica 0.1", request, epoch=epoch)
        self.assertEqual(self.env.take(), [])
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(len(self.rejections()), 2)

    def test_message_bounds(self) -> None:
        """The largest message Olympus takes depends on the sender's role."""
        self.set_up()
        self.register_spare(3)
        self.assertEqual(self.olympus.max_message_from(OLYMPUS_KEY.verify_key_bytes), MAX_MESSAGE)
        self.assertEqual(self.olympus.max_message_from(spare_key(0).verify_key_bytes), MAX_MESSAGE)
        self.assertEqual(
            self.olympus.max_message_from(client_key(1).verify_key_bytes), MAX_CLIENT_MESSAGE
        )
        for key in (spare_key(3), STRANGER_KEY):
            self.assertEqual(
                self.olympus.max_message_from(key.verify_key_bytes), MAX_STRANGER_MESSAGE
            )

    def test_rejections_are_throttled(self) -> None:
        """A flood from one address writes at most a burst of 10 log lines."""
        self.set_up()
        for _ in range(1000):
            self.send(STRANGER, STRANGER_KEY, "replica 0.0",
                      ReconfigurationRequest(0, "replica 0.0", "flood", ()))
        self.assertEqual(len(self.rejections()), 10)
        self.assertIsNone(self.olympus.reconfiguring)
        self.assertEqual(self.env.take(), [])


class ConfigurationQueryTests(OlympusTestCase):
    """Clients ask Olympus for the current configuration."""

    def ask(self, index: int, key: crypto.KeyPair | None = None, peer: Peer | None = None) -> None:
        """Client C{index} (or whoever holds C{key}, at C{peer}) asks for the configuration."""
        self.send(peer or client_address(index), key or client_key(index), f"client {index}",
                  GetConfiguration(index))

    def test_answers(self) -> None:
        """A registered client's query is answered with the current configuration, sealed."""
        self.set_up()
        self.ask(1)
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
        self.ask(0)
        self.assertEqual(self.env.take(), [])

    def test_before_announcement(self) -> None:
        """A configuration set up but not yet ready is not told to clients who ask."""
        for n in range(3):
            self.register_spare(n)
        for index in range(2):
            self.register_client(index)
        self.ready(0)
        self.env.take()
        self.ask(0)
        self.register_client(1)
        self.assertEqual(self.env.take(), [])

    def test_query_with_wrong_key(self) -> None:
        """A query claiming to be from client 0 but signed with another key is rejected."""
        self.set_up()
        self.ask(0, key=STRANGER_KEY)
        self.ask(0, key=STRANGER_KEY, peer=STRANGER)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 2)

    def test_query_as_another_client(self) -> None:
        """Client 1 cannot ask as client 0 (and have client 0's answer sent where it says)."""
        self.set_up()
        self.ask(0, key=client_key(1), peer=client_address(1))
        self.assertEqual(self.env.take(), [])
        [reason] = self.rejections()
        self.assertTrue(reason.startswith("dropped get_configuration"), reason)


class FinishTests(OlympusTestCase):
    """At the end of a run Olympus retires the replicas and reports to the driver."""

    def finish(
        self, key: crypto.KeyPair = OLYMPUS_KEY, signer: str = OLYMPUS, peer: Peer = DRIVER
    ) -> None:
        """The driver (or whoever holds C{key}, at C{peer}) asks Olympus to finish."""
        self.send(peer, key, signer, FinishRun("every client has finished"), epoch=b"")

    def final_state(self, index: int, state: dict[str, str], signer_index: int | None = None) -> None:
        """Replica C{index} of configuration 0 reports C{state}, sealed by replica C{signer_index}."""
        signer = index if signer_index is None else signer_index
        message = FinalState(0, index, state, 3)
        self.send(spare_peer(signer), spare_key(signer), f"replica 0.{signer}", message)

    def quiescent(self, index: int, drained: bool = True) -> None:
        """Replica C{index} of configuration 0 says it is quiescent."""
        self.send(spare_peer(index), spare_key(index), f"replica 0.{index}",
                  Quiescent(0, index, drained))

    def finish_quiesced(self) -> None:
        """Finish, and every replica of configuration 0 says it is quiescent."""
        self.finish()
        self.assertEqual(
            [type(self.from_olympus(s)) for s in self.env.take()], [Quiesce] * 3
        )
        for index in range(3):
            self.quiescent(index)

    def test_finish_run_quiesces_first(self) -> None:
        """
        Finishing first asks the replicas to finish their work in flight,
        retiring nobody, spares included: a reconfiguration may still need
        them.
        """
        self.set_up()
        self.register_spare(3)
        self.finish()
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [spare_peer(n) for n in range(3)])
        self.assertEqual([self.from_olympus(s) for s in sent], [Quiesce(0)] * 3)
        self.quiescent(0)
        self.quiescent(2, drained=False)
        self.assertEqual(self.env.take(), [])
        [warning] = self.env.events_named("bcr.quiescent")
        self.assertEqual(warning["replica"], "replica 0.2")
        # A stranger cannot answer for a replica.
        self.send(STRANGER, STRANGER_KEY, "replica 0.1", Quiescent(0, 1, True))
        self.assertEqual(self.env.take(), [])
        self.quiescent(1)
        self.assertEqual(
            [self.from_olympus(s) for s in self.env.take()], [Shutdown(0)] * 3 + [Shutdown(-1)]
        )

    def test_quiesce_deadline(self) -> None:
        """A replica that never says it is quiescent (crashed) is retired after two step timeouts."""
        self.set_up()
        self.finish()
        self.env.take()
        self.quiescent(0)
        self.quiescent(1)
        self.env.clock.advance(7.999)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(0.001)
        self.assertEqual([self.from_olympus(s) for s in self.env.take()], [Shutdown(0)] * 3)
        [timeout] = self.env.events_named("bcr.quiesce_timeout")
        self.assertEqual(timeout["silent"], [2])
        self.assertEqual(self.olympus.errors, [])

    def test_finish_run(self) -> None:
        """Shutdown goes to every replica; the report follows once all final states are in."""
        self.set_up()
        self.register_spare(3)
        self.finish_quiesced()
        sent = self.env.take()
        self.assertEqual([s.to for s in sent], [spare_peer(n) for n in range(4)])
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

    def report_after(self, action: object) -> RunReport:
        """Set up, run C{action}, finish the run with every final state in; the report."""
        self.set_up()
        action()  # type: ignore[operator]
        self.finish_quiesced()
        self.env.take()
        for index in range(3):
            self.final_state(index, {"a": "b"})
        [sent] = self.env.take()
        report = self.from_olympus(sent)
        assert isinstance(report, RunReport)
        return report

    def test_report_names_refused_clients(self) -> None:
        """
        A client of the case whose key is not admitted never registers; the
        report says why, naming a few of the refused keys (anyone may try
        any index), and Olympus sends the refused sender nothing; what is
        recorded is bounded by the case's clients however many keys try
        (index 2 is outside the case).
        """
        for n in range(50):
            key = key_for(f"unadmitted {n}")
            message = RegisterClient(n % 3, STRANGER.address, key.verify_key_bytes)
            self.send(Peer(STRANGER.address, key.verify_key_bytes), key, f"client {n % 3}",
                      message, epoch=b"")
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.olympus._refused_clients), CASE.num_client)
        for n in range(CASE.num_client - 1):
            self.register_client(n)
        self.finish()
        [sent] = self.env.take()
        report = self.from_olympus(sent)
        assert isinstance(report, RunReport)
        last = CASE.num_client - 1
        named = [
            key_for(f"unadmitted {n}").verify_key_bytes.hex()[:16]
            for n in range(50) if n % 3 == last
        ][:REFUSED_KEYS_NAMED]
        self.assertEqual(
            [e for e in report.errors if "never registered" in e],
            [
                f"client {last} never registered: Olympus refused "
                f"{sum(1 for n in range(50) if n % 3 == last)} "
                f"registration(s) with a key not admitted for client {last} "
                f"(keys {', '.join(named)}; docs/SECURITY.md, admission)"
            ],
        )

    def test_report_names_placements(self) -> None:
        """The report says which admitted spare took each place, for the launcher to name logs."""
        report = self.report_after(lambda: None)
        self.assertEqual(
            report.placements,
            tuple(
                Placement(0, n, spare_address(n), spare_identity(n).verify_key_bytes)
                for n in range(3)
            ),
        )

    def test_report_carries_fired_faults(self) -> None:
        """A replica's report of a fault its failures line names reaches the run report once."""
        fired = FaultFired(0, 1, "shuttle(0,0)", "crash()", False)

        def report_twice() -> None:
            for _ in range(2):
                self.send(spare_peer(1), spare_key(1), "replica 0.1", fired)

        self.assertEqual(self.report_after(report_twice).faults_fired, (fired,))

    def test_fault_reports_are_bounded_by_the_case(self) -> None:
        """
        A replica cannot grow the report beyond its own failures line: one
        record per pair (0.1 has one), none for a place without failures,
        none sent for another place or by an outsider.
        """
        planned = FaultFired(0, 1, "shuttle(0,0)", "crash()", False)

        def report_freely() -> None:
            self.send(spare_peer(1), spare_key(1), "replica 0.1", planned)
            for n in range(5):
                self.send(spare_peer(1), spare_key(1), "replica 0.1",
                          FaultFired(0, 1, f"shuttle(0,{n + 1})", "extra_op()", True))
            self.send(spare_peer(0), spare_key(0), "replica 0.0",
                      FaultFired(0, 0, "shuttle(0,0)", "extra_op()", True))
            self.send(spare_peer(0), spare_key(0), "replica 0.0",
                      FaultFired(0, 1, "shuttle(0,0)", "crash()", True))
            self.send(STRANGER, STRANGER_KEY, "replica 0.1",
                      FaultFired(0, 1, "shuttle(0,0)", "crash()", True))

        self.assertEqual(self.report_after(report_freely).faults_fired, (planned,))
        rejected = self.rejections()
        self.assertEqual(len(rejected), 8, rejected)

    def test_finish_run_deadline(self) -> None:
        """Without every final state, the report comes after twice the step timeout and names the silent replicas, without calling it an error (a crashed replica never answers)."""
        self.set_up()
        self.finish_quiesced()
        self.env.take()
        self.final_state(0, {"a": "b"})
        self.env.clock.advance(7.999)
        self.assertEqual(self.env.take(), [])
        self.env.clock.advance(0.001)
        [sent] = self.env.take()
        report = self.from_olympus(sent)
        self.assertEqual([f.index for f in report.final_states], [0])
        self.assertEqual(report.silent, (1, 2))
        self.assertEqual(report.errors, ())
        [timeout] = self.env.events_named("bcr.final_state_timeout")
        self.assertEqual(timeout["missing"], [1, 2])

    def test_finish_run_from_client(self) -> None:
        """A finish request sealed by a client is rejected."""
        self.set_up()
        self.finish(key=client_key(0), signer="client 0", peer=client_address(0))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 1)

    def test_finish_run_from_replica(self) -> None:
        """A finish request sealed by a replica is rejected."""
        self.set_up()
        self.finish(key=spare_key(0), signer="replica 0.0", peer=spare_peer(0))
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 1)

    def test_finish_run_with_wrong_key(self) -> None:
        """A finish request naming Olympus but sealed with another key is rejected."""
        self.set_up()
        # From the stranger's own connection ...
        self.finish(key=STRANGER_KEY, peer=STRANGER)
        # ... and sealed by it but claimed to come over the driver's.
        self.finish(key=STRANGER_KEY)
        self.assertEqual(self.env.take(), [])
        self.assertEqual(len(self.rejections()), 2)
        self.assertFalse(self.olympus._end.started)

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
        self.finish_quiesced()
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
        self.finish_quiesced()
        self.env.take()
        message = FinalState(0, 0, {"forged": "x"}, 3)
        self.send(client_address(0), client_key(0), "client 0", message)
        self.olympus.timer_expired("finish")
        report = self.from_olympus(self.env.take()[0])
        self.assertEqual(report.final_states, ())

    def test_final_state_from_a_stranger(self) -> None:
        """A stranger's final state for a position does not count."""
        self.set_up()
        self.finish_quiesced()
        self.env.take()
        self.send(STRANGER, STRANGER_KEY, "replica 0.0", FinalState(0, 0, {"forged": "x"}, 3))
        self.final_state(1, {"a": "b"})
        self.final_state(2, {"a": "b"})
        self.assertEqual(self.env.take(), [])
        self.final_state(0, {"a": "b"})
        report = self.from_olympus(self.env.take()[0])
        self.assertEqual([f.state for f in report.final_states], [{"a": "b"}] * 3)

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
        self.assertEqual([s.to for s in sent], [spare_peer(0), DRIVER])
        report = self.from_olympus(sent[1])
        self.assertEqual((report.configuration, report.final_states), (-1, ()))
