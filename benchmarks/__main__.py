"""`make bench`: every benchmark with its defaults; each prints its ratio against a floor."""

import sys

from benchmarks import intake, lookup, mail_walk, outbox, verify

for bench in (verify, mail_walk, outbox, intake, lookup):
    sys.argv = [bench.__name__]
    bench.main()
    print()
