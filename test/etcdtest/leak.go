package etcdtest

import "go.uber.org/goleak"

// LeakOptions are the goleak options for suites that run etcd through this package: they
// ignore only goroutines that Ginkgo, gRPC and etcd's server start once per process and never
// stop, so that everything a test itself starts must be gone when it ends.
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(m, etcdtest.LeakOptions()...) }
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/onsi/ginkgo/v2/internal/interrupt_handler.(*InterruptHandler).registerForInterrupts.func2"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	}
}
