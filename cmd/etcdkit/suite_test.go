package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestEtcdkit(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	RunSpecs(t, "cmd/etcdkit")
}

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// result is one run of the command.
type result struct {
	code           int
	stdout, stderr string
}

// etcdkit runs the command against c with args, and checks that it wrote nothing: etcd's
// revision is the same before and after.
func etcdkit(c *etcdtest.Cluster, args ...string) result {
	GinkgoHelper()
	before := revision(c.Client())
	r := runArgs(append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, args...)...)
	Expect(revision(c.Client())).To(Equal(before), "the command changed etcd's revision; stderr: %s", r.stderr)
	return r
}

// runArgs runs the command with args as they are.
func runArgs(args ...string) result {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// etcdkitJSON runs the command with -o json, expects success, and decodes its output.
func etcdkitJSON[T any](c *etcdtest.Cluster, args ...string) T {
	GinkgoHelper()
	r := etcdkit(c, append(args, "-o", "json")...)
	Expect(r.code).To(Equal(0), "stderr: %s", r.stderr)
	var out T
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	Expect(dec.Decode(&out)).To(Succeed(), "stdout: %s", r.stdout)
	return out
}

// revision is etcd's current revision.
func revision(cli *clientv3.Client) int64 {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "revision-probe", clientv3.WithCountOnly())
	Expect(err).NotTo(HaveOccurred())
	return resp.Header.Revision
}

// createRevision is the create revision and lease of key, 0 when it does not exist.
func createRevision(cli *clientv3.Client, key string) (rev, lease int64) {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	Expect(err).NotTo(HaveOccurred())
	if len(resp.Kvs) == 0 {
		return 0, 0
	}
	return resp.Kvs[0].CreateRevision, resp.Kvs[0].Lease
}
