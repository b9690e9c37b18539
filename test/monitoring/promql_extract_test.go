package monitoring_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("the PromQL extractor", func() {
	DescribeTable("finds the metric names of an expression",
		func(expr string, names []string, grouping []string) {
			info, err := parsePromQL(expr)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Names()).To(Equal(names))
			Expect(info.Grouping).To(Equal(grouping))
		},
		Entry("a bare selector", `etcdkit_leader`, []string{"etcdkit_leader"}, nil),
		Entry("a selector with matchers and a range",
			`rate(foo_total{a="b", c=~"d|e"}[5m])`, []string{"foo_total"}, nil),
		Entry("an aggregation with by before its argument",
			`sum by (namespace, job) (rate(x_total[5m])) > 0.05`, []string{"x_total"}, []string{"namespace", "job"}),
		Entry("an aggregation with by after its argument",
			`sum(rate(x_total[5m])) by (controller)`, []string{"x_total"}, []string{"controller"}),
		Entry("set operators and vector matching",
			`max by (job) (a) < 1 and on (job) count by (job) (b{component="election"}) or c unless d`,
			[]string{"a", "b", "c", "d"}, []string{"job", "job", "job"}),
		Entry("group_left with and without labels",
			`a * on (x) group_left (y, z) b + ignoring (w) group_right c`,
			[]string{"a", "b", "c"}, []string{"x", "y", "z", "w"}),
		Entry("offset, bool and numbers",
			`x unless x offset 10m > bool 1e+3 + inf - NaN`, []string{"x"}, nil),
		Entry("a histogram quantile",
			`histogram_quantile(0.99, sum by (le) (rate(w_bucket{job=~"$job"}[$__rate_interval])))`,
			[]string{"w_bucket"}, []string{"le"}),
		Entry("a subquery over a recorded series",
			`max_over_time(ns_job:shards:sum_min2m[1h]) - min_over_time(sum by (job) (s)[1h:1m])`,
			[]string{"ns_job:shards:sum_min2m", "s"}, []string{"job"}),
		Entry("braces, brackets and names inside strings",
			`x{a="}{", b='y[1m]', c="sum(z)"}`, []string{"x"}, nil),
		Entry("a name in __name__", `{__name__="y", a="1"}`, []string{"y"}, nil),
		Entry("function calls without selectors", `vector(1) + time() + scalar(v)`, []string{"v"}, nil),
		Entry("string arguments", `label_replace(q, "dst", "$1", "src", "(.*)")`, []string{"q"}, nil),
		Entry("a comment", "a # b\n+ c", []string{"a", "c"}, nil),
	)

	It("keeps the matchers of a selector", func() {
		info, err := parsePromQL(`count(e{component="sharding", job!="x", p=~"a\"b"})`)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Selectors).To(Equal([]selector{{Name: "e", Matchers: []matcher{
			{"component", "=", "sharding"}, {"job", "!=", "x"}, {"p", "=~", `a"b`},
		}}}))
	})

	DescribeTable("refuses what it cannot read",
		func(expr string) {
			_, err := parsePromQL(expr)
			Expect(err).To(HaveOccurred())
		},
		Entry("an unterminated string", `x{a="b}`),
		Entry("an unterminated brace", `x{a="b"`),
		Entry("an unbalanced bracket", `rate(x[5m)`),
		Entry("a matcher without a value", `x{a=}`),
		Entry("a selector without a name", `{a="b"}`),
	)

	DescribeTable("reads Grafana's template queries",
		func(q string, names []string) {
			info, err := parseTemplateQuery(q)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Names()).To(Equal(names))
		},
		Entry("label_values of a query", `label_values(m{job=~"$job", x=","}, controller)`, []string{"m"}),
		Entry("label_values of a label", `label_values(job)`, []string(nil)),
		Entry("query_result", `query_result(sum by (job) (m))`, []string{"m"}),
	)
})
