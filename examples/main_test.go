package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestExamples(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "examples")
}

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}

// runExamples runs the program with args and returns its exit code, story and errors.
func runExamples(ctx context.Context, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// leftover counts the keys that runs of the program left behind.
func leftover(ctx context.Context, cli *clientv3.Client) int64 {
	resp, err := cli.Get(ctx, "/etcdkit-examples/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	Expect(err).NotTo(HaveOccurred())
	return resp.Count
}

var _ = Describe("the examples program", func() {
	It("runs every example against an external etcd process and cleans up after itself", func(ctx SpecContext) {
		c := etcdtest.NewProcesses(GinkgoT())
		code, out, errs := runExamples(ctx, "--endpoints="+strings.Join(c.Endpoints(), ","), "--example=all")
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", out, errs)
		for _, name := range exampleNames() {
			Expect(out).To(ContainSubstring("--- "+name+": ok"), "example %s", name)
		}
		Expect(leftover(ctx, c.Client())).To(BeZero())
	})

	It("runs one example on an etcd with TLS and authentication, given etcdctl's flags", func(ctx SpecContext) {
		c := etcdtest.NewProcesses(GinkgoT(), etcdtest.WithTLS(), etcdtest.WithAuth("pw"))
		f := c.TLSFiles()
		tlsFlags := []string{"--endpoints=" + c.Endpoint(0), "--cacert=" + f.CA, "--cert=" + f.Cert, "--key=" + f.Key}

		code, out, errs := runExamples(ctx, append(tlsFlags, "--user=root:pw", "--example=txn")...)
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", out, errs)
		Expect(out).To(ContainSubstring("--- txn: ok"))

		By("a wrong password: one clear line, exit 1")
		code, _, errs = runExamples(ctx, append(tlsFlags, "--user=root:wrong", "--example=txn")...)
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: etcd at "+c.Endpoint(0)+": authentication failed: wrong user name or password\n"), errs)

		By("no client certificate: exit 1 naming the endpoint and what is missing, no stack trace")
		code, _, errs = runExamples(ctx, "--endpoints="+c.Endpoint(0), "--cacert="+f.CA, "--user=root:pw", "--dial-timeout=5s", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: etcd at " + c.Endpoint(0) + " requires a client certificate: give one with --cert and --key " +
			"(remote error: tls: certificate required)\n"))
	})

	It("fails within the dial timeout and names the endpoints when etcd is unreachable", func(ctx SpecContext) {
		start := time.Now()
		code, _, errs := runExamples(ctx, "--endpoints=127.0.0.1:1,127.0.0.1:2", "--dial-timeout=500ms", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
		Expect(errs).To(HavePrefix("examples: etcd at 127.0.0.1:1,127.0.0.1:2 did not answer within 500ms"))
		Expect(strings.Count(errs, "\n")).To(Equal(1), errs)
	})

	It("names a missing or bad TLS file in one line", func(ctx SpecContext) {
		code, _, errs := runExamples(ctx, "--endpoints=127.0.0.1:1", "--cacert=/nonexistent/ca.pem", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: TLS: reading CA certificate: open /nonexistent/ca.pem: no such file or directory\n"))

		code, _, errs = runExamples(ctx, "--endpoints=127.0.0.1:1", "--cacert=main.go", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: TLS: CA certificate main.go holds no PEM certificate\n"))

		code, _, errs = runExamples(ctx, "--endpoints=127.0.0.1:1", "--cert=main.go", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(ContainSubstring("needs both cert and key"))
	})

	It("says which TLS file is wrong, in one line", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS())
		f := c.TLSFiles()
		foreign, err := etcdtest.ForeignCA(GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		ep := c.Endpoint(0)
		// etcd gives no answer to a refused handshake, so each run waits out its dial
		// timeout: a generous one, since the handshake that explains it has as long.
		timeout := "--dial-timeout=5s"

		By("a CA that did not sign etcd's certificate")
		code, _, errs := runExamples(ctx, "--endpoints="+ep, "--cacert="+foreign.CA, "--cert="+f.Cert, "--key="+f.Key, timeout, "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: etcd at " + ep + ": its certificate is not signed by the CA in --cacert " + foreign.CA +
			" (x509: certificate signed by unknown authority)\n"))

		By("a client certificate from a CA that etcd does not trust")
		code, _, errs = runExamples(ctx, "--endpoints="+ep, "--cacert="+f.CA, "--cert="+foreign.Cert, "--key="+foreign.Key, timeout, "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(HavePrefix("examples: etcd at " + ep + " refused the client certificate in --cert " + foreign.Cert +
			": it is not signed by a CA that etcd trusts"))
		Expect(strings.Count(errs, "\n")).To(Equal(1), errs)

		By("an http:// endpoint with TLS files: refused, never plain text")
		plain := "http://" + ep[len("https://"):]
		code, _, errs = runExamples(ctx, "--endpoints="+plain, "--cacert="+f.CA, "--cert="+f.Cert, "--key="+f.Key, "--user=root:pw", "--example=txn")
		Expect(code).To(Equal(1))
		Expect(errs).To(Equal("examples: etcd endpoint " + plain + " is plain http:// but TLS files are given (--cacert " + f.CA +
			", --cert " + f.Cert + ", --key " + f.Key + "): write it " + ep + " to use them\n"))
	})

	It("warns on stderr when the password goes in plain text, and goes on", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("pw"))
		ep := c.Endpoint(0)
		Expect(ep).To(HavePrefix("http://"))
		code, out, errs := runExamples(ctx, "--endpoints="+ep, "--user=root:pw", "--example=txn")
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", out, errs)
		Expect(out).To(ContainSubstring("--- txn: ok"))
		Expect(errs).To(HavePrefix("examples: warning: the password of etcd user \"root\" goes unencrypted to " + ep +
			": use https:// endpoints with --cacert\n"))
		Expect(errs).NotTo(ContainSubstring("pw"))
	})

	It("rejects an unknown example with the list of valid ones, exit 2", func(ctx SpecContext) {
		code, _, errs := runExamples(ctx, "--example=nope")
		Expect(code).To(Equal(2))
		Expect(errs).To(Equal("examples: unknown example \"nope\": valid ones are all, " + strings.Join(exampleNames(), ", ") + "\n"))
	})

	It("rejects malformed flags, exit 2", func(ctx SpecContext) {
		By("--user without a colon: the value may be a password, and is not echoed")
		code, _, errs := runExamples(ctx, "--user=s3cret")
		Expect(code).To(Equal(2))
		Expect(errs).To(Equal("examples: --user must be given as user:password (the value given has no colon)\n"))
		Expect(errs).NotTo(ContainSubstring("s3cret"))
		code, _, _ = runExamples(ctx, "--no-such-flag")
		Expect(code).To(Equal(2))
		code, _, errs = runExamples(ctx, "--dial-timeout=0s")
		Expect(code).To(Equal(2))
		Expect(errs).To(ContainSubstring("--dial-timeout must be positive"))
	})
})
