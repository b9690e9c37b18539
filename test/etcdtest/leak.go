package etcdtest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakOptions are the goleak options for suites that run etcd through this package: they
// ignore only goroutines that Ginkgo, gRPC and etcd's server start once per process and never
// stop, so that everything a test itself starts must be gone when it ends.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/onsi/ginkgo/v2/internal/interrupt_handler.(*InterruptHandler).registerForInterrupts.func2"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	}
}

// leakGrace is how long VerifyTestMain waits for goroutines to end after the tests. Peer
// connections between in-process members end some time after the members close.
const leakGrace = 10 * time.Second

// VerifyTestMain runs the tests and then fails the run if goroutines other than those of
// LeakOptions are still alive after a grace period:
//
//	func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, extra ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		opts := append(LeakOptions(), extra...)
		deadline := time.Now().Add(leakGrace)
		var err error
		for {
			if err = goleak.Find(opts...); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
