package main

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("the command line", func() {
	DescribeTable("refuses a wrong command line with exit code 2, before connecting",
		func(want string, args ...string) {
			// Nothing listens on port 1: a usage error must come before any connection.
			r := runArgs(append([]string{"--endpoints", "127.0.0.1:1"}, args...)...)
			Expect(r.code).To(Equal(exitUsage))
			Expect(r.stdout).To(BeEmpty())
			Expect(r.stderr).To(ContainSubstring(want))
		},
		Entry("no command", "no command given"),
		Entry("an unknown command", `unknown command "leases"`, "leases", "/x/"),
		Entry("a missing argument", "status needs a NAME: etcdkit status NAME", "status"),
		Entry("a missing prefix", "locks needs a PREFIX", "locks"),
		Entry("too many arguments", "takes one PREFIX, got 2 arguments", "locks", "/a/", "/b/"),
		Entry("an unknown flag", "flag provided but not defined: -bogus", "locks", "/a/", "--bogus"),
		Entry("an unknown output format", `-o must be table or json, got "yaml"`, "locks", "/a/", "-o", "yaml"),
		Entry("a status flag on another command", "--members applies to the status command only", "locks", "/a/", "--members"),
		Entry("a manager name the manager refuses", "a manager name holds only", "status", "a/b"),
		Entry("a root that is not a prefix", "--root must start with '/'", "status", "x", "--root", "etcdkit/x/"),
		Entry("a user without a password", "--user must be given as user:password", "locks", "/a/", "--user", "root"),
		Entry("an empty prefix", "PREFIX must not be empty", "locks", ""),
		Entry("a zero timeout", "--dial-timeout must be positive", "locks", "/a/", "--dial-timeout", "0s"),
	)

	It("prints its usage with -h and exits 0", func() {
		r := runArgs("-h")
		Expect(r.code).To(Equal(0))
		Expect(r.stdout).To(ContainSubstring("status NAME"))
		Expect(r.stdout).To(ContainSubstring("-endpoints"))
	})

	It("names the endpoints when etcd does not answer", func() {
		r := runArgs("locks", "/locks/", "--endpoints", "127.0.0.1:1,127.0.0.1:2", "--dial-timeout", "300ms")
		Expect(r.code).To(Equal(exitFailure))
		Expect(r.stdout).To(BeEmpty())
		Expect(r.stderr).To(ContainSubstring("etcd at 127.0.0.1:1,127.0.0.1:2"))
	})

	It("names the prefix that etcd refused to let the user read", func() {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("root-secret"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		Expect(c.AddUser(ctx, "viewer", "viewer-secret", etcdtest.Read("/locks/"))).To(Succeed())
		l, err := lock.New(c.Client(), "/locks/report", lock.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Lock(ctx)).To(Succeed())
		defer func() { Expect(l.Close()).To(Succeed()) }()
		as := func(args ...string) result {
			return etcdkit(c, append(args, "--user", "viewer:viewer-secret")...)
		}

		r := as("locks", "/secrets/")
		Expect(r.code).To(Equal(exitFailure))
		Expect(r.stderr).To(ContainSubstring(`permission denied reading /secrets/: etcd user "viewer" may not read that prefix`))
		Expect(r.stderr).NotTo(ContainSubstring("viewer-secret"))

		r = as("status", "jobs")
		Expect(r.code).To(Equal(exitFailure))
		Expect(r.stderr).To(ContainSubstring("permission denied reading /etcdkit/jobs/"))

		// What the role grants is read.
		r = as("locks", "/locks/", "-o", "json")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(ContainSubstring(`"key": "/locks/report"`))
		Expect(r.stderr).To(ContainSubstring("unencrypted"), "the password went in plain text: warned")
	})

	It("connects with etcdctl's TLS flags", func() {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS())
		f := c.TLSFiles()
		Expect(strings.Join(c.Endpoints(), ",")).To(HavePrefix("https://"))
		out := etcdkitJSON[electionsOutput](c, "elections", "/", "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)
		Expect(out.Elections).To(BeEmpty())
	})
})
