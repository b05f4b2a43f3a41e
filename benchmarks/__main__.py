"""`make bench`: every benchmark with its defaults; each prints its ratio against a floor.

``workers`` needs PostgreSQL (``KEYDESK_TEST_POSTGRES_URL``) and says so when it is absent; the
50,000-mail size of ``scale`` is left out unless ``make bench BENCH_ARGS=--with-50k``.
"""

import sys

from benchmarks import intake, latency, lookup, mail_walk, outbox, scale, verify, workers

extra = sys.argv[1:]
for bench in (verify, mail_walk, outbox, intake, lookup, latency, scale, workers):
    sys.argv = [bench.__name__, *(extra if bench is scale else [])]
    bench.main()
    print()
