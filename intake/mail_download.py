"""Downloading mail from the selected folder: sizes and bodies, in bounded FETCH commands.

Bodies are read with ``BODY.PEEK[]`` (never setting \\Seen behind a person's back). New mails'
sizes and first bytes come in one FETCH; longer mails again several per FETCH, and large ones in
partial chunks, so memory stays bounded by the chunk size. A mixin of ``MailboxConnection``
(intake/poller.py), which provides the logged-in ``client``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from imapclient import IMAPClient

# Headers of a mail too large to download are read up to this many bytes.
HEADER_CAP_BYTES = 256 * 1024
# The first FETCH of new mail asks for each mail's size and its first bytes together: most key
# submissions are short text mails that arrive whole in it, and a separate size FETCH costs a
# server about as much as the bodies themselves (pymap: 0.2 s for 200 mails). Mails longer than
# the prefix are fetched again whole, grouped by size (``fetch_bodies``). One FETCH holds at most
# _PREFIX_BUDGET_CHUNKS fetch chunks of prefixes in memory.
PREFIX_BYTES = 16 * 1024
_PREFIX_BUDGET_CHUNKS = 8
_UIDS_PER_FETCH = 500


def _partial_body(data: dict) -> bytes | None:
    """The bytes of a ``BODY[]<offset>`` item of a FETCH response (servers name it with its offset)."""
    return next((bytes(value or b"") for key, value in data.items() if key.startswith(b"BODY[]")), None)


class MailDownload:
    """The FETCH side of a mailbox connection."""

    @property
    def client(self) -> IMAPClient:
        raise NotImplementedError

    def fetch_mails(
        self, uids: Iterable[int], chunk_bytes: int, max_bytes: int
    ) -> Iterator[tuple[int, int, bytes | None]]:
        """Yield (uid, RFC822.SIZE, raw bytes) in UID order; the bytes are None for a mail larger than
        ``max_bytes`` (or that vanished or outgrew it while being fetched). Mails that vanished before
        the first FETCH are left out."""
        prefix = min(PREFIX_BYTES, chunk_bytes)
        per_fetch = max(1, min(_UIDS_PER_FETCH, _PREFIX_BUDGET_CHUNKS * chunk_bytes // prefix))
        ordered = sorted(uids)
        for start in range(0, len(ordered), per_fetch):
            group = ordered[start : start + per_fetch]
            response = self.client.fetch(group, ["RFC822.SIZE", f"BODY.PEEK[]<0.{prefix}>"])
            whole: dict[int, tuple[int, bytes | None]] = {}
            longer: dict[int, int] = {}
            for uid in group:
                data = response.get(uid) or {}
                if b"RFC822.SIZE" not in data:
                    continue  # expunged by someone else meanwhile
                size = int(data[b"RFC822.SIZE"])
                head = _partial_body(data)
                if size > max_bytes or head is None:
                    whole[uid] = (size, None)
                elif len(head) < prefix:
                    whole[uid] = (size, head)
                else:
                    longer[uid] = size
            del response
            # The longer mails come in UID order too; the whole ones are slotted in between them.
            waiting = iter(sorted(whole))
            next_whole = next(waiting, None)
            for uid, raw in self.fetch_bodies(longer, chunk_bytes, max_bytes):
                while next_whole is not None and next_whole < uid:
                    yield (next_whole, *whole.pop(next_whole))
                    next_whole = next(waiting, None)
                yield uid, longer[uid], raw
            while next_whole is not None:
                yield (next_whole, *whole.pop(next_whole))
                next_whole = next(waiting, None)

    def fetch_headers(self, uid: int, cap: int = HEADER_CAP_BYTES) -> bytes | None:
        """The header block (at most ``cap`` bytes) of one mail; None when it is gone."""
        response = self.client.fetch([uid], [f"BODY.PEEK[HEADER]<0.{cap}>"])
        data = response.get(uid, {})
        for key, value in data.items():
            if key.startswith(b"BODY[HEADER]"):
                return bytes(value or b"")
        return None

    def fetch_bodies(
        self, sizes: dict[int, int], chunk_bytes: int, max_bytes: int
    ) -> Iterator[tuple[int, bytes | None]]:
        """Yield (uid, raw bytes) in UID order; None for a mail that vanished or outgrew ``max_bytes``.

        Mails smaller than a chunk are fetched several at a time (up to a chunk in total);
        larger ones with partial fetches of ``chunk_bytes`` each.
        """
        batch: list[int] = []
        batch_bytes = 0
        for uid in sorted(sizes):
            size = sizes[uid]
            if size >= chunk_bytes:
                yield from self._fetch_whole(batch)
                batch, batch_bytes = [], 0
                yield uid, self._fetch_chunked(uid, chunk_bytes, max_bytes)
                continue
            if batch and batch_bytes + size > chunk_bytes:
                yield from self._fetch_whole(batch)
                batch, batch_bytes = [], 0
            batch.append(uid)
            batch_bytes += size
        yield from self._fetch_whole(batch)

    def _fetch_whole(self, uids: list[int]) -> Iterator[tuple[int, bytes | None]]:
        if not uids:
            return
        response = self.client.fetch(uids, ["BODY.PEEK[]"])
        for uid in uids:
            body = response.get(uid, {}).get(b"BODY[]")
            yield uid, bytes(body) if body is not None else None

    def _fetch_chunked(self, uid: int, chunk_bytes: int, max_bytes: int) -> bytes | None:
        parts: list[bytes] = []
        offset = 0
        while True:
            response = self.client.fetch([uid], [f"BODY.PEEK[]<{offset}.{chunk_bytes}>"])
            data = response.get(uid)
            if not data:
                return None
            chunk = _partial_body(data)
            if chunk is None:
                return None
            parts.append(chunk)
            offset += len(chunk)
            if offset > max_bytes:
                return None  # the server understated RFC822.SIZE: treat as too large
            if len(chunk) < chunk_bytes:
                return b"".join(parts)
