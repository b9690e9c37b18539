//go:build unix

package sharding_test

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestSharding(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(15 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	RunSpecs(t, "sharding")
}

// TestMain runs the suite or, when a spec starts the test binary again with memberEnv set,
// one member of the manager in this process (see member_test.go).
func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		os.Exit(runMember())
	}
	etcdtest.VerifyTestMain(m)
}

// The manager under test, as every member runs it.
const (
	managerName = "shardtest"
	root        = "/etcdkit/" + managerName + "/"
	shards      = 16
	ttl         = 2 * time.Second // the members' LeaseTTL
	itemsPrefix = "/items/"
	outPrefix   = "/out/"
)

// failover is how long the design lets a crashed member's shards stay unowned: its lease's
// TTL, plus a second for etcd to notice and the others to claim them.
const failover = ttl + time.Second
