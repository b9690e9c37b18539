package config_test

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/config"
)

var _ = Describe("FeatureFlags", func() {
	var flags *config.FeatureFlags
	var m *config.Manager
	BeforeEach(func(ctx SpecContext) {
		m = newManager(ctx, cluster.Client(), uniquePrefix())
		var err error
		flags, err = config.NewFeatureFlags(m)
		Expect(err).NotTo(HaveOccurred())
	})

	It("enables and disables flags for everyone", func(ctx SpecContext) {
		Expect(flags.IsEnabled(ctx, "new-ui")).To(BeFalse(), "a flag never set is off")
		Expect(flags.Enable(ctx, "new-ui")).To(Succeed())
		Expect(flags.Enable(ctx, "dark-mode")).To(Succeed())
		Expect(flags.IsEnabled(ctx, "new-ui")).To(BeTrue())
		Expect(flags.IsEnabledFor(ctx, "new-ui", "user-1")).To(BeTrue())
		Expect(flags.Disable(ctx, "dark-mode")).To(Succeed())
		Expect(flags.IsEnabled(ctx, "dark-mode")).To(BeFalse())
		Expect(flags.IsEnabledFor(ctx, "dark-mode", "user-1")).To(BeFalse())
		Expect(flags.GetAllFlags(ctx)).To(Equal(map[string]bool{"new-ui": true, "dark-mode": false}))
		Expect(m.GetInt(ctx, config.FlagPrefix+"new-ui")).To(Equal(100), "a flag is its rollout percentage")
		Expect(m.Set(ctx, config.FlagPrefix+"legacy", true)).To(Succeed())
		Expect(flags.IsEnabled(ctx, "legacy")).To(BeTrue(), "a boolean counts as 0 or 100")
	})

	It("rolls a flag out to a stable share of subjects", func(ctx SpecContext) {
		Expect(flags.SetRollout(ctx, "checkout", 30)).To(Succeed())
		Expect(flags.Rollout(ctx, "checkout")).To(Equal(30))
		Expect(flags.IsEnabled(ctx, "checkout")).To(BeFalse(), "not on for everyone")
		enabledAt := func() map[string]bool {
			on := map[string]bool{}
			for i := 0; i < 2000; i++ {
				subject := fmt.Sprintf("user-%d", i)
				ok, err := flags.IsEnabledFor(ctx, "checkout", subject)
				Expect(err).NotTo(HaveOccurred())
				if ok {
					on[subject] = true
				}
			}
			return on
		}
		at30 := enabledAt()
		Expect(len(at30)).To(BeNumerically("~", 600, 100))
		Expect(enabledAt()).To(Equal(at30), "the same subjects every time")

		Expect(flags.SetRollout(ctx, "checkout", 50)).To(Succeed())
		at50 := enabledAt()
		Expect(len(at50)).To(BeNumerically("~", 1000, 100))
		for s := range at30 {
			Expect(at50).To(HaveKey(s), "growing the rollout keeps the subjects already in")
		}

		Expect(flags.SetRollout(ctx, "checkout", 0)).To(Succeed())
		Expect(enabledAt()).To(BeEmpty())
		Expect(flags.SetRollout(ctx, "checkout", 100)).To(Succeed())
		Expect(enabledAt()).To(HaveLen(2000))
	})

	It("rejects bad names, percentages and subjects, and bad stored flags", func(ctx SpecContext) {
		Expect(flags.Enable(ctx, "")).To(MatchError("config: flag name must not be empty"))
		Expect(flags.Enable(ctx, "a/b")).To(MatchError(`config: flag name must not contain "/", got "a/b"`))
		Expect(flags.SetRollout(ctx, "x", 101)).To(MatchError(`config: flag "x": rollout percent must be between 0 and 100, got 101`))
		Expect(flags.SetRollout(ctx, "x", -1)).To(MatchError(ContainSubstring("got -1")))
		_, err := flags.IsEnabledFor(ctx, "x", "")
		Expect(err).To(MatchError(`config: flag "x": subject must not be empty`))

		Expect(flags.Enable(ctx, "good")).To(Succeed())
		Expect(m.Set(ctx, config.FlagPrefix+"odd", "yes")).To(Succeed())
		_, err = flags.IsEnabled(ctx, "odd")
		Expect(err).To(MatchError(config.ErrWrongType))
		Expect(err.Error()).To(ContainSubstring(`"flags/odd"`))
		all, err := flags.GetAllFlags(ctx)
		Expect(err).To(MatchError(ContainSubstring(`"flags/odd"`)))
		Expect(all).To(Equal(map[string]bool{"good": true}))

		_, err = config.NewFeatureFlags(nil)
		Expect(err).To(MatchError(ContainSubstring("need a Manager")))
	})
})
