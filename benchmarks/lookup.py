"""Look-up latency across the network: the desk asking the guarantor's service over HTTPS.

The floor is the embedded look-up in the same process (``RegistryLookup``: one scrypt of the key,
the guard's queries, one commit), which every look-up must pay wherever it runs. keydesk over the
network adds TLS on loopback, HTTP, the token check and JSON both ways. Both are measured in the
same run; the ratio is what crossing the boundary costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, SQLModel

from guarantor.csv_input import GuaranteeRequest, read_requests
from guarantor.issue import issue_request
from guarantor.lookup_service import RegistryLookup
from guarantor.service.app import create_app
from guarantor.service.tokens import add_token
from guarantor.settings import GuarantorSettings
from intake.lookup_client import HttpLookup
from keydesk.database import make_engine
from store.tls import client_ssl_context
from tests.tls_certs import private_ca
from verifier import access_key
from verifier.certificate_signature import key_id
from verifier.lookup import LookupStatus
from web.server import Listen, ServedApp

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _rate(count: int, work) -> float:
    start = time.perf_counter()
    for _ in range(count):
        work()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=40)
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        engine = make_engine(f"sqlite:///{home}/keydesk.db")
        SQLModel.metadata.create_all(engine)
        settings = GuarantorSettings.model_validate({"service": {"rate_per_minute": 1_000_000}}, context={"home": home})
        signing_key = Ed25519PrivateKey.generate()
        request = next(r for r in read_requests((FIXTURES / "guarantees.csv").read_bytes())
                       if isinstance(r, GuaranteeRequest))
        issued = issue_request(engine, request, settings=settings, signing_key=signing_key, out_dir=home / "out", now=now)
        key = access_key.parse(issued.access_key)
        with Session(engine) as session:
            token = add_token(session, "misato", now)
            session.commit()
        tls = private_ca(home, "lookup")
        app = create_app(engine, settings, {key_id(signing_key.public_key()): signing_key.public_key()})
        embedded = RegistryLookup(engine, settings, requester="misato")
        with ServedApp(app, Listen("127.0.0.1", 0, tls.cert, tls.key, what="guarantor.service")) as served:
            remote = HttpLookup(served.url, token, ssl_context=client_ssl_context(tls.ca_file), attempts=1)
            for lookup in (embedded, remote):  # warm up: connections, caches
                assert lookup.lookup(issued.guarantee_no, key, now).status is LookupStatus.FOUND
            floor_rate = _rate(args.lookups, lambda: embedded.lookup(issued.guarantee_no, key, now))
            remote_rate = _rate(args.lookups, lambda: remote.lookup(issued.guarantee_no, key, now))
            remote.close()
        engine.dispose()
    print(f"lookup: {args.lookups} look-ups of one certificate")
    print(f"  floor (embedded, same process)       {floor_rate:8.1f} look-ups/s")
    print(f"  keydesk (HTTPS to the service)       {remote_rate:8.1f} look-ups/s")
    print(f"  ratio keydesk / floor                {remote_rate / floor_rate:8.2f}")
    print(f"  added per look-up                    {(1 / remote_rate - 1 / floor_rate) * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
