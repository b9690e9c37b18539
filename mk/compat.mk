# The etcd version matrix: make test-compat runs the process-level suites against etcd 3.5,
# 3.6 and 3.7 (go.mod's version, bin/etcd) and prints pass or fail per version and package.
# The older servers are built from compat/etcd35 and compat/etcd36, modules of their own that
# pin go.etcd.io/etcd/server/v3 (and so are not part of the main module's ./...). Not part of
# make test: it takes a while (about 15 minutes a version on 2 cores).
#
#   make test-compat                        every version, one after the other
#   make test-compat-3.5                    one version
#   make test-compat COMPAT_VERSIONS=3.6    the same
#   make test-compat COMPAT_PKGS=./lock/    some packages
#
# Logs and the summary go to bin/compat/. See compat/run.sh.

COMPAT_VERSIONS ?= 3.5 3.6 3.7
COMPAT_PKGS     ?= ./test/sharding ./election/ ./lock/ ./source/ ./test/e2e/ ./test/finalizer/

.PHONY: etcd-3.5 etcd-3.6 test-compat test-compat-3.5 test-compat-3.6 test-compat-3.7

# GOWORK=off: each compat module builds on its own go.mod and go.sum alone.
etcd-3.5:
	cd compat/etcd35 && GOWORK=off $(GO) build -o $(BIN)/etcd-3.5 .

etcd-3.6:
	cd compat/etcd36 && GOWORK=off $(GO) build -o $(BIN)/etcd-3.6 .

# Every binary is built before the first suite runs, so that no build shares the cores with a
# timing-sensitive suite.
test-compat: $(addprefix etcd-,$(filter 3.5 3.6,$(COMPAT_VERSIONS))) $(if $(filter 3.7,$(COMPAT_VERSIONS)),etcd)
	GO='$(GO)' BIN='$(BIN)' COMPAT_PKGS='$(COMPAT_PKGS)' bash compat/run.sh $(COMPAT_VERSIONS)

test-compat-3.5: etcd-3.5
	GO='$(GO)' BIN='$(BIN)' COMPAT_PKGS='$(COMPAT_PKGS)' bash compat/run.sh 3.5

test-compat-3.6: etcd-3.6
	GO='$(GO)' BIN='$(BIN)' COMPAT_PKGS='$(COMPAT_PKGS)' bash compat/run.sh 3.6

test-compat-3.7: etcd
	GO='$(GO)' BIN='$(BIN)' COMPAT_PKGS='$(COMPAT_PKGS)' bash compat/run.sh 3.7
