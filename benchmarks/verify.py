"""Verifier throughput: key notices read, classified and extracted per second.

The floor is pypdf extracting the same PDF's text in this process (what any reader must pay);
keydesk adds the bounded worker process (CPU and memory limits), normalisation, classification
and field extraction. Both are measured in the same run; the ratio is what the safety costs.
"""

from __future__ import annotations

import argparse
import io
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from pypdf import PdfReader

from guarantor.pdf import render_key_notice
from rules.signatures import DocumentSignatures
from tests.support.deployment import ADVANCE_CERTIFICATE
from formats import access_key
from verifier.classify import classify
from verifier.extract import extract_key_notices
from verifier.pdf_text import PdfTextWorker, extract_in_process

RULES = Path(__file__).resolve().parents[1] / "config" / "rules.toml"


def _notice() -> bytes:
    return render_key_notice(ADVANCE_CERTIFICATE, access_key.generate(), datetime(2026, 4, 1, 1, tzinfo=timezone.utc))


def _rate(count: int, work) -> float:
    start = time.perf_counter()
    for _ in range(count):
        work()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=300)
    args = parser.parse_args()
    data = _notice()
    with RULES.open("rb") as handle:
        signatures = DocumentSignatures.model_validate(tomllib.load(handle)["documents"])

    def floor() -> None:
        reader = PdfReader(io.BytesIO(data))
        "".join(page.extract_text() for page in reader.pages)

    with PdfTextWorker() as worker:
        worker.extract(data)  # start-up paid once, as in the daemon
        in_process_rate = _rate(args.documents, lambda: extract_in_process(data))
        worker_rate = _rate(args.documents, lambda: worker.extract(data))

        def keydesk() -> None:
            result = worker.extract(data)
            classify(result, signatures)
            extract_key_notices(result, signatures)

        floor_rate = _rate(args.documents, floor)
        keydesk_rate = _rate(args.documents, keydesk)
    print(f"verify: {args.documents} key notices")
    print(f"  floor (pypdf text in process)        {floor_rate:8.1f} docs/s")
    print(f"  keydesk (bounded worker + verifier)  {keydesk_rate:8.1f} docs/s")
    print(f"  ratio keydesk / floor                {keydesk_rate / floor_rate:8.2f}")
    overhead_ms = (1 / worker_rate - 1 / in_process_rate) * 1000
    print(
        f"  worker process overhead per PDF      {overhead_ms:8.2f} ms "
        f"(in process {in_process_rate:.1f}/s, in the worker {worker_rate:.1f}/s)"
    )


if __name__ == "__main__":
    main()
