"""`keydesk run` killed with SIGKILL at random moments during a burst of mail, then restarted.

The promise: every contractor gets an answer, exactly once, or (only when a kill fell between the
SMTP server's 250 and our commit) twice with the same Message-ID; and the answers left by a
killed daemon go out within seconds of the restart, without waiting for a claim lease.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from email import message_from_bytes
from email.policy import default as default_policy

from sqlmodel import Session, select

from keydesk.database import make_engine
from keydesk.embedded_imap import port_closed
from store.tables import InboundMessage, OutboxMessage
from tests.support.cli import wait_until
from tests.support.daemon import Daemon, set_toml as _set
from tests.support.smtp_servers import Recorder, running
from tests.support.servers import deployment_for, free_port, make_mail, pymap_server  # noqa: F401 - fixture

MAILS = 45
KILLS = 4
LEASE_SECONDS = 300  # mailer.delivery.default_lease: what a restart must not wait for


def _contractor_mail(n: int) -> bytes:
    """A mail from a distinct sender (the per-sender hourly limit is not what these tests are
    about), authenticated by the town's server: an unauthenticated sender gets the short reply
    without In-Reply-To (issue 12), and these tests match replies to mails by In-Reply-To."""
    domain = f"kensetsu{n}.example"
    return (
        f"Authentication-Results: mx.town.misato.example; dmarc=pass (p=none) header.from={domain}\r\n".encode()
        + make_mail(n, sender=f"contractor{n}@{domain}")
    )


def _answers(handler: Recorder) -> dict[str, list[str]]:
    """Original Message-ID → the Message-IDs of every reply copy received for it."""
    found: dict[str, list[str]] = defaultdict(list)
    for received in list(handler.messages):
        reply = message_from_bytes(received.content, policy=default_policy)
        found[str(reply["In-Reply-To"]).strip()].append(str(reply["Message-ID"]))
    return found


def test_sigkill_during_a_burst_then_restart_answers_every_mail_once(pymap_server, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    handler = Recorder()
    with running(handler) as smtp_port:
        config = deployment_for(tmp_path, pymap_server)
        _set(config, "port = 1025", f"port = {smtp_port}")
        daemon = Daemon(config, tmp_path / "daemon.log")
        mails = [_contractor_mail(n) for n in range(MAILS)]
        chunks = [mails[i :: KILLS + 1] for i in range(KILLS + 1)]
        try:
            for kill in range(KILLS):
                daemon.start()
                pymap_server.append_many(chunks[kill])
                # A random moment in the burst: after a random number of further replies went out.
                target = len(handler.messages) + rng.randint(1, 5)
                wait_until(
                    lambda target=target: len(handler.messages) >= target or not daemon.alive,
                    timeout=60,
                    what=f"replies before kill {kill + 1} (seed {seed})",
                )
                assert daemon.alive, daemon.log.read_text(errors="replace")[-2000:]
                daemon.kill()
            pymap_server.append_many(chunks[KILLS])
            daemon.start()
            restarted = time.monotonic()
            originals = {f"<mail-{n}@kensetsu.example>" for n in range(MAILS)}
            wait_until(
                lambda: set(_answers(handler)) >= originals,
                timeout=60,
                what=f"every mail answered after the restart (seed {seed})",
            )
            catch_up = time.monotonic() - restarted
            assert daemon.stop() == 0
        finally:
            if daemon.alive:
                daemon.kill()

    answers = _answers(handler)
    assert set(answers) == originals, f"seed {seed}"
    for original, copies in answers.items():
        # Exactly once, or twice with the same Message-ID (the ambiguous window only).
        assert len(copies) in (1, 2) and len(set(copies)) == 1, (original, copies, f"seed {seed}")
    assert catch_up < LEASE_SECONDS / 10, f"{catch_up:.1f} s: the restart waited for something (seed {seed})"

    engine = make_engine(f"sqlite:///{tmp_path}/var/keydesk.db")
    with Session(engine) as session:
        inbound = session.exec(select(InboundMessage)).all()
        outbox = session.exec(select(OutboxMessage)).all()
    engine.dispose()
    assert len(inbound) == MAILS and {row.state for row in inbound} == {"processed"}
    assert all(row.attempts == 0 for row in inbound)  # a kill is never counted as the mail's failure
    assert len(outbox) == MAILS and {row.state for row in outbox} == {"sent"}
    duplicates = sum(len(copies) - 1 for copies in answers.values())
    print(f"seed {seed}: {MAILS} mails, {KILLS} kills, {duplicates} duplicate(s), caught up in {catch_up:.1f} s")


def test_the_embedded_imap_server_dies_with_a_killed_daemon_and_a_restart_gets_its_port(tmp_path):
    imap_port, smtp_port = free_port(), free_port()
    config = deployment_for(tmp_path, imap_port=imap_port, smtp_port=smtp_port, embedded=True)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        for _ in range(2):
            daemon.start()
            wait_until(
                lambda: not port_closed("127.0.0.1", imap_port) and not port_closed("127.0.0.1", smtp_port),
                timeout=30,
                what="the embedded servers to listen",
            )
            daemon.kill()
            # The kernel ends the pymap child with its parent: nothing keeps the port.
            wait_until(lambda: port_closed("127.0.0.1", imap_port), timeout=10, what="the embedded IMAP port to close")
        daemon.start()
        wait_until(lambda: not port_closed("127.0.0.1", imap_port), timeout=30, what="the restarted server")
        assert daemon.stop() == 0
    finally:
        if daemon.alive:
            daemon.kill()
    assert port_closed("127.0.0.1", imap_port) and port_closed("127.0.0.1", smtp_port)


WORKERS = 3


def test_workers_on_postgresql_killed_at_random_lose_nothing_and_process_nothing_twice(
    pymap_server, postgres_url, tmp_path
):
    from keydesk.database import upgrade
    from store.tables import Submission

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    handler = Recorder()
    with running(handler) as smtp_port:
        config = deployment_for(tmp_path, pymap_server)
        _set(config, "port = 1025", f"port = {smtp_port}")
        _set(config, 'url = "sqlite:///var/keydesk.db"', f'url = "{postgres_url}"')
        _set(config, 'backend = "files"', 'backend = "database"')
        engine = make_engine(postgres_url)
        upgrade(engine)
        workers = [Daemon(config, tmp_path / f"worker{n}.log") for n in range(WORKERS)]
        mails = [_contractor_mail(n) for n in range(MAILS)]
        chunks = [mails[i :: KILLS + 1] for i in range(KILLS + 1)]
        try:
            for worker in workers:
                worker.start()
            for kill in range(KILLS):
                pymap_server.append_many(chunks[kill])
                target = len(handler.messages) + rng.randint(1, 5)
                wait_until(
                    lambda target=target: len(handler.messages) >= target,
                    timeout=60,
                    what=f"replies before kill {kill + 1} (seed {seed})",
                )
                victim = rng.choice(workers)
                assert victim.alive, victim.log.read_text(errors="replace")[-2000:]
                victim.kill()
                victim.start()
            pymap_server.append_many(chunks[KILLS])
            originals = {f"<mail-{n}@kensetsu.example>" for n in range(MAILS)}
            wait_until(
                lambda: set(_answers(handler)) >= originals,
                timeout=60,
                what=f"every mail answered by the workers (seed {seed})",
            )
            codes = [worker.stop() for worker in workers]
            assert codes == [0] * WORKERS, [
                (c, w.log.read_text(errors="replace")[-1500:]) for c, w in zip(codes, workers)
            ]
        finally:
            for worker in workers:
                if worker.alive:
                    worker.kill()

    answers = _answers(handler)
    assert set(answers) == originals, f"seed {seed}"
    for original, copies in answers.items():
        assert len(copies) in (1, 2) and len(set(copies)) == 1, (original, copies, f"seed {seed}")
    with Session(engine) as session:
        inbound = session.exec(select(InboundMessage)).all()
        submissions = session.exec(select(Submission)).all()
        outbox = session.exec(select(OutboxMessage)).all()
    engine.dispose()
    assert len(inbound) == MAILS and {row.state for row in inbound} == {"processed"}
    # Processed once each: one submission and one reply per mail, whichever worker took it.
    assert sorted(s.inbound_id for s in submissions) == sorted(row.id for row in inbound)
    assert len(outbox) == MAILS and {row.state for row in outbox} == {"sent"}
    assert all(row.attempts == 0 for row in inbound)
    duplicates = sum(len(copies) - 1 for copies in answers.values())
    print(f"seed {seed}: {WORKERS} workers, {KILLS} kills, {duplicates} duplicate(s)")
