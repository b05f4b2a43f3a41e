"""The guarantor's look-up service over HTTP (`keydesk guarantor serve`): the pages an obligee uses
(STEP1 → STEP2 → STEP3, in Japanese) and the JSON API desks call with a bearer token.

``docs/lookup-protocol.md`` describes the API so that a real guarantor could implement it.
"""
