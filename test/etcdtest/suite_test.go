package etcdtest_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestEtcdtest(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "etcdtest")
}

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}
