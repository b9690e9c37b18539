# Cross builds: the library, the examples program and etcdtest's in-process part build for
# linux, darwin and windows (the guide runs its examples on windows too). Pausing a process
# member (SIGSTOP/SIGCONT) is unix only: test/etcdtest/signal_*.go split it by build tags.
# The go command's cache keeps this cheap when nothing changed; make test runs it first.
.PHONY: cross

cross:
	GOOS=windows GOARCH=amd64 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 $(GO) build ./...
	GOOS=windows $(GO) vet ./test/etcdtest/ ./examples/

TEST_DEPS += cross
