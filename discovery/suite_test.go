package discovery_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestDiscovery(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "discovery")
}

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}

// cluster is the etcd the specs share; specs that restart or cut etcd start their own.
var cluster *etcdtest.Cluster

var _ = BeforeSuite(func() {
	cluster = etcdtest.New(GinkgoT())
})

// uniquePrefix returns a key prefix that no other spec uses.
func uniquePrefix() string {
	return fmt.Sprintf("/discovery-test/%d", time.Now().UnixNano())
}

// capturedLog records every log line, so that a spec can wait for the library to say that
// it noticed something.
type capturedLog struct {
	mu    sync.Mutex
	lines []string
}

func newCapturedLog() (*capturedLog, logr.Logger) {
	c := &capturedLog{}
	return c, funcr.New(func(prefix, args string) {
		c.mu.Lock()
		c.lines = append(c.lines, prefix+" "+args)
		c.mu.Unlock()
		fmt.Fprintln(GinkgoWriter, prefix, args)
	}, funcr.Options{Verbosity: 1})
}

// contains reports whether any line holds all of the substrings.
func (c *capturedLog) contains(subs ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			return true
		}
	}
	return false
}
