"""`make bench`: every benchmark with its defaults; each prints its ratio against a floor."""

import sys

from benchmarks import intake, lookup, outbox, verify

for bench in (verify, outbox, intake, lookup):
    sys.argv = [bench.__name__]
    bench.main()
    print()
