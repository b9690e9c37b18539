package config_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/test/etcdtest"
	"github.com/etcdkit/etcdkit/test/logtest"
)

func TestConfig(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "config")
}

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}

// cluster is the etcd the specs share.
var cluster *etcdtest.Cluster

var _ = BeforeSuite(func() {
	cluster = etcdtest.New(GinkgoT())
})

// uniquePrefix returns a key prefix that no other spec uses.
func uniquePrefix() string {
	return fmt.Sprintf("/config-test/%d/", time.Now().UnixNano())
}

// newCapturedLog returns a logger whose lines a spec can look for; they also go to the
// spec's output.
func newCapturedLog() (*logtest.Capture, logr.Logger) { return logtest.New(GinkgoWriter) }
