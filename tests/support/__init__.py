"""What the tests share, and only that: real servers (IMAP, SMTP, Chromium), TLS material, a
deployment and its CLI, mails for a desk, the verifier's fakes. Test modules import from here
(or take a fixture registered in ``tests/conftest.py``), never from another test module.
"""
