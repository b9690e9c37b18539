//go:build unix

// Package finalizer_test runs a controller that cleans up through store finalizers in
// processes of their own, and checks that no cleanup is missed when every replica is down
// at the time of a delete, or when the replica doing the cleanup is killed in the middle.
package finalizer_test

import (
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestFinalizer(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(20 * time.Millisecond)
	RunSpecs(t, "finalizer")
}

func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		os.Exit(runMember())
	}
	etcdtest.VerifyTestMain(m)
}
