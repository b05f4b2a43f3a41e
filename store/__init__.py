"""Persistence shared by the shell packages: the SQLModel tables and the audit chain.

Tables live here rather than in ``keydesk/`` because intake, mailer and guarantor all write them
and nothing may import ``keydesk/``. This package imports nothing of the project but ``rules``.
"""
