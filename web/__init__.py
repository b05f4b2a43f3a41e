"""What keydesk's web services share: serving an ASGI app under uvicorn with the TLS-or-loopback rule.

The guarantor's look-up service (``guarantor.service``) and the staff console (``console``) both
run through :mod:`web.server`, so the rule "plain HTTP only on loopback" lives in one place.
"""
