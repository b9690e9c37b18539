package etcdtest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// tokenClient returns a client of the given endpoints that sends the fixed token and never
// asks for another, with a function that reads a key through it.
func tokenClient(c *etcdtest.Cluster, token string, endpoints ...string) func(context.Context) error {
	cfg := c.ClientConfig()
	cfg.Username, cfg.Password, cfg.Token = "", "", token
	if len(endpoints) > 0 {
		cfg.Endpoints = endpoints
	}
	cli, err := clientv3.New(cfg)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = cli.Close() })
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "/token-probe")
		return err
	}
}

// issue asks etcd for a root token.
func issue(ctx context.Context, c *etcdtest.Cluster) string {
	user, password := c.User()
	resp, err := c.Client().Authenticate(ctx, user, password)
	Expect(err).NotTo(HaveOccurred())
	return resp.Token
}

// jwtExpiry reads the expiry claim of a JWT, without checking its signature.
func jwtExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	Expect(parts).To(HaveLen(3), "a JWT has a header, claims and a signature: %q", token)
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	Expect(err).NotTo(HaveOccurred())
	var claims struct {
		Exp      int64  `json:"exp"`
		Username string `json:"username"`
	}
	Expect(json.Unmarshal(payload, &claims)).To(Succeed())
	Expect(claims.Username).To(Equal("root"))
	return time.Unix(claims.Exp, 0)
}

const tokenTTL = 2 * time.Second

var _ = DescribeTableSubtree("expiring auth tokens",
	func(start func(etcdtest.TB, ...etcdtest.Option) *etcdtest.Cluster) {
		It("WithSimpleTokenTTL: a token expires once unused for the TTL", func(ctx SpecContext) {
			c := start(GinkgoT(), etcdtest.WithAuth("pw"), etcdtest.WithSimpleTokenTTL(tokenTTL))
			get := tokenClient(c, issue(ctx, c))
			Expect(get(ctx)).To(Succeed())
			// Each read that succeeds uses the token again, so the reads are further apart
			// than the TTL and etcd's one-second expiry scan.
			Eventually(get).WithContext(ctx).WithTimeout(20 * time.Second).ProbeEvery(tokenTTL + 1500*time.Millisecond).
				Should(MatchError(ContainSubstring("invalid auth token")))
			// A client with a password gets a new token and goes on.
			_, err := c.Client().Get(ctx, "/after")
			Expect(err).NotTo(HaveOccurred())
		})

		It("WithJWT: tokens are JWTs that expire the TTL after they are issued, however used", func(ctx SpecContext) {
			c := start(GinkgoT(), etcdtest.WithAuth("pw"), etcdtest.WithJWT(tokenTTL))
			issued := time.Now()
			token := issue(ctx, c)
			// The claim counts whole seconds.
			Expect(jwtExpiry(token)).To(BeTemporally("~", issued.Add(tokenTTL), time.Second+500*time.Millisecond))
			get := tokenClient(c, token)
			Expect(get(ctx)).To(Succeed())
			Eventually(get).WithContext(ctx).WithTimeout(10 * time.Second).ProbeEvery(100 * time.Millisecond).
				Should(MatchError(ContainSubstring("invalid auth token")))
			Expect(time.Since(issued)).To(BeNumerically(">=", tokenTTL-time.Second))
			_, err := c.Client().Get(ctx, "/after")
			Expect(err).NotTo(HaveOccurred())
		})
	},
	Entry("in-process", etcdtest.New),
	Entry("processes", etcdtest.NewProcesses),
)

var _ = Describe("JWT keys", func() {
	It("are shared by the members: a token one member issued is valid on every member", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithMembers(3), etcdtest.WithAuth("pw"), etcdtest.WithJWT(time.Hour))
		token := issue(ctx, c)
		for i := 0; i < c.Members(); i++ {
			Expect(tokenClient(c, token, c.Endpoint(i))(ctx)).To(Succeed(), "member %d", i)
		}
	})
})

var _ = Describe("token options", func() {
	It("refuse what etcd would not run or would ignore", func(ctx SpecContext) {
		_, err := etcdtest.Start(ctx, etcdtest.WithAuth("pw"), etcdtest.WithJWT(0))
		Expect(err).To(MatchError(ContainSubstring("the JWT TTL must be positive")))
		_, err = etcdtest.Start(ctx, etcdtest.WithAuth("pw"), etcdtest.WithSimpleTokenTTL(-time.Second))
		Expect(err).To(MatchError(ContainSubstring("the simple token TTL must be positive")))
		_, err = etcdtest.Start(ctx, etcdtest.WithAuth("pw"), etcdtest.WithJWT(time.Second), etcdtest.WithSimpleTokenTTL(time.Second))
		Expect(err).To(MatchError(ContainSubstring("exclude each other")))
		_, err = etcdtest.Start(ctx, etcdtest.WithJWT(time.Second))
		Expect(err).To(MatchError(ContainSubstring("need WithAuth")))
	})
})
