package config_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/config"
)

var _ = Describe("bad input", func() {
	It("is rejected by NewManager", func() {
		_, err := config.NewManager(nil, "/config/app", config.Options{})
		Expect(err).To(MatchError("config: client must not be nil"))
		_, err = config.NewManager(cluster.Client(), "", config.Options{})
		Expect(err).To(MatchError("config: prefix must not be empty"))
	})

	It("is rejected by the Manager's calls with errors naming the key", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), uniquePrefix())
		for _, c := range []struct{ key, want string }{
			{"", "config: key must not be empty"},
			{"/abs", `config: key must not start with "/" (it is relative to the manager's prefix), got "/abs"`},
			{"dir/", `config: key must not end with "/" (that names a prefix), got "dir/"`},
		} {
			Expect(m.Set(ctx, c.key, 1)).To(MatchError(c.want))
			_, err := m.GetString(ctx, c.key)
			Expect(err).To(MatchError(c.want))
			Expect(m.Delete(ctx, c.key)).To(MatchError(c.want))
		}
		Expect(m.Set(ctx, "ch", make(chan int))).To(MatchError(ContainSubstring(`config: "ch": a value of type chan int does not encode as JSON`)))
		_, err := m.GetAll(ctx, "/abs")
		Expect(err).To(MatchError(ContainSubstring(`sub-prefix must not start with "/"`)))
		noop := func(string, any, any) {}
		Expect(m.Watch(ctx, "", noop)).To(MatchError(ContainSubstring("watched key must not be empty")))
		Expect(m.Watch(ctx, "/abs", noop)).To(MatchError(ContainSubstring(`watched key must not start with "/"`)))
		Expect(m.Watch(ctx, "k", nil)).To(MatchError("config: watch callback must not be nil"))
	})

	It("reads values that are not JSON as clear errors, never a panic", func(ctx SpecContext) {
		prefix := uniquePrefix()
		m := newManager(ctx, cluster.Client(), prefix)
		Expect(m.Set(ctx, "good", "fine")).To(Succeed())
		for key, raw := range map[string]string{
			"plain":    "localhost",
			"empty":    "",
			"binary":   "\x00\xff\xfe",
			"trailing": `"a" "b"`,
			"huge":     "1e999",
		} {
			_, err := cluster.Client().Put(ctx, prefix+key, raw)
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() error {
				_, err := m.GetString(ctx, key)
				return err
			}).Should(MatchError(config.ErrInvalidValue), "key %s", key)
			_, err = m.GetString(ctx, key)
			Expect(err.Error()).To(HavePrefix(`config: "` + key + `" (revision `))
			_, err = m.GetInt(ctx, key)
			Expect(err).To(MatchError(config.ErrInvalidValue))
			_, err = m.GetBool(ctx, key)
			Expect(err).To(MatchError(config.ErrInvalidValue))
			_, err = m.Get(ctx, key)
			Expect(err).To(MatchError(config.ErrInvalidValue))
		}
		_, err := m.GetString(ctx, "plain")
		Expect(err).To(MatchError(ContainSubstring(`stored value is not JSON: invalid character 'l' looking for beginning of value (value "localhost")`)))

		all, err := m.GetAll(ctx, "")
		Expect(err).To(MatchError(config.ErrInvalidValue))
		Expect(err.Error()).To(And(ContainSubstring(`"plain"`), ContainSubstring(`"binary"`)))
		Expect(all).To(Equal(map[string]any{"good": "fine"}), "the values that decode are returned")
	})
})
