"""`keydesk demo`: the whole story on the embedded mail system, in a fresh var/demo/.

- ``scenario``: the contractors, guarantees and mails of the story (data only);
- ``mail_builders`` and ``documents``: the mails and PDFs the contractors send, as real clients write them;
- ``lookup``: the guarantor's look-up service over HTTP and the case a clerk looks up by hand;
- ``run``: the run itself (servers, guarantor, desk, digest), reporting into ``report``;
- ``output``: the console (rich) that shows a ``report``.

``report`` imports neither ``run`` nor ``output``, so the two do not import each other. The
command is ``keydesk/cli_demo.py``.
"""
