# The fault campaign of test/chaos: workloads as real processes under a random, seeded
# schedule of overlapping faults, etcd's history recorded and checked afterwards. go test
# (and so make test) runs a short smoke campaign; make chaos runs a long one and prints its
# report. Not part of make test.
#
#   make chaos                        30 faults, a seed drawn from the clock (logged)
#   make chaos FAULTS=30 SEED=1       replays the schedule of seed 1
#   make chaos DURATION=10m SEED=7    faults for ten minutes
#   make chaos MODE=ranges            the controller members in the range mode (RangeShards)
#
# CHAOS_REPORT=<file> also writes the report to a file.

FAULTS        ?= 30
SEED          ?=
DURATION      ?=
MODE          ?=
CHAOS_FLAGS   ?= -race
CHAOS_TIMEOUT ?= 90m

.PHONY: chaos

chaos: etcd
	SEED='$(SEED)' FAULTS='$(FAULTS)' DURATION='$(DURATION)' MODE='$(MODE)' \
		$(GO) test $(CHAOS_FLAGS) -count=1 -timeout $(CHAOS_TIMEOUT) -run '^TestChaos$$' -v ./test/chaos/
