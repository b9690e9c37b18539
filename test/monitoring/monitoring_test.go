package monitoring_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestMonitoring(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "monitoring")
}

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// The files under test, from this package's directory.
var (
	deployDir     = filepath.Join("..", "..", "deploy", "monitoring")
	rulesFile     = "etcdkit-rules.yml"
	rulesTestFile = "etcdkit-rules.test.yml"
	dashboardFile = filepath.Join(deployDir, "etcdkit-dashboard.json")
)

// targetLabels are added by Prometheus when it scrapes a manager (namespace by Kubernetes
// service discovery): the rules group by them, the manager does not export them.
var targetLabels = []string{"namespace", "job", "instance"}

// --- the files ---------------------------------------------------------------------------

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleTestFile struct {
	Tests []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadYAML(path string, into any) {
	GinkgoHelper()
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	Expect(dec.Decode(into)).To(Succeed(), "parsing %s", path)
}

func loadRules() []rule {
	GinkgoHelper()
	var f ruleFile
	loadYAML(filepath.Join(deployDir, rulesFile), &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	Expect(rules).NotTo(BeEmpty())
	return rules
}

// dashboard is the part of a Grafana dashboard that the specs read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func loadDashboard() dashboard {
	GinkgoHelper()
	b, err := os.ReadFile(dashboardFile)
	Expect(err).NotTo(HaveOccurred())
	var d dashboard
	Expect(json.Unmarshal(b, &d)).To(Succeed(), "parsing %s", dashboardFile)
	return d
}

// queryPanels are the panels that show data: every panel but rows, those of collapsed rows
// included.
func (d dashboard) queryPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// templateQuery is the query of a template variable, given as a string or as an object.
func templateQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Query
}

// query is one PromQL expression of the files, with where it comes from.
type query struct {
	where string
	expr  string
	info  exprInfo
}

// allQueries parses the expressions of every rule, dashboard panel and template variable.
func allQueries() (queries []query, recorded map[string]bool) {
	GinkgoHelper()
	recorded = map[string]bool{}
	for _, r := range loadRules() {
		info, err := parsePromQL(r.Expr)
		Expect(err).NotTo(HaveOccurred(), "rule %s%s", r.Alert, r.Record)
		queries = append(queries, query{where: "rule " + r.Alert + r.Record, expr: r.Expr, info: info})
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	d := loadDashboard()
	for _, p := range d.queryPanels() {
		for _, t := range p.Targets {
			info, err := parsePromQL(t.Expr)
			Expect(err).NotTo(HaveOccurred(), "panel %q, query %s", p.Title, t.RefID)
			queries = append(queries, query{where: fmt.Sprintf("panel %q query %s", p.Title, t.RefID), expr: t.Expr, info: info})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := templateQuery(v.Query)
		info, err := parseTemplateQuery(q)
		Expect(err).NotTo(HaveOccurred(), "variable %s", v.Name)
		queries = append(queries, query{where: "variable " + v.Name, expr: q, info: info})
	}
	return queries, recorded
}

// seriesNamePattern reads the metric name of a promtool input series.
var seriesNamePattern = regexp.MustCompile(`^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)

// testInputNames are the metric names of the promtool unit tests' input series.
func testInputNames() map[string]bool {
	GinkgoHelper()
	var f ruleTestFile
	loadYAML(filepath.Join(deployDir, rulesTestFile), &f)
	names := map[string]bool{}
	for _, t := range f.Tests {
		for _, s := range t.InputSeries {
			m := seriesNamePattern.FindStringSubmatch(s.Series)
			Expect(m).NotTo(BeNil(), "test %q: series %q", t.Name, s.Series)
			names[m[1]] = true
		}
	}
	return names
}

// --- the scrape ----------------------------------------------------------------------------

// scrape is a parsed /metrics: each series' labels by metric name.
type scrape map[string][]map[string]string

func fetchMetrics(addr string) (scrape, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseExposition(string(b))
}

// parseExposition reads Prometheus' text format: name{label="value",...} value [timestamp].
func parseExposition(text string) (scrape, error) {
	out := scrape{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			return nil, fmt.Errorf("line %d: no metric name: %q", n+1, line)
		}
		name, labels := line[:end], map[string]string{}
		if line[end] == '{' {
			i := end + 1
			for i < len(line) && line[i] != '}' {
				eq := strings.IndexByte(line[i:], '=')
				if eq < 0 || i+eq+1 >= len(line) || line[i+eq+1] != '"' {
					return nil, fmt.Errorf("line %d: bad labels: %q", n+1, line)
				}
				key := line[i : i+eq]
				var v strings.Builder
				j := i + eq + 2
				for ; j < len(line) && line[j] != '"'; j++ {
					if line[j] == '\\' && j+1 < len(line) {
						j++
						if line[j] == 'n' {
							v.WriteByte('\n')
							continue
						}
					}
					v.WriteByte(line[j])
				}
				if j >= len(line) {
					return nil, fmt.Errorf("line %d: unterminated label value: %q", n+1, line)
				}
				labels[key] = v.String()
				i = j + 1
				if i < len(line) && line[i] == ',' {
					i++
				}
			}
			if i >= len(line) {
				return nil, fmt.Errorf("line %d: unterminated labels: %q", n+1, line)
			}
		}
		out[name] = append(out[name], labels)
	}
	return out, nil
}

// labelNames are the label names of the series of the given metrics, and the target labels.
func (s scrape) labelNames(names []string) map[string]bool {
	out := map[string]bool{}
	for _, l := range targetLabels {
		out[l] = true
	}
	for _, name := range names {
		for _, series := range s[name] {
			for l := range series {
				out[l] = true
			}
		}
	}
	return out
}

// has reports whether some series of sel.Name carries every literal equality matcher of
// sel (matchers on target labels, or whose value holds a Grafana variable, aside).
func (s scrape) has(sel selector) bool {
	for _, series := range s[sel.Name] {
		ok := true
		for _, m := range sel.Matchers {
			if m.Op != "=" || slices.Contains(targetLabels, m.Label) || strings.Contains(m.Value, "$") {
				continue
			}
			if series[m.Label] != m.Value {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// problems lists what the queries need that the scrape lacks: a metric, a series with a
// matcher's label value, a label a matcher or a grouping names.
func problems(s scrape, queries []query, recorded map[string]bool, inputs map[string]bool) []string {
	var out []string
	for _, q := range queries {
		var names []string
		for _, sel := range q.info.Selectors {
			if recorded[sel.Name] {
				continue
			}
			names = append(names, sel.Name)
			switch {
			case len(s[sel.Name]) == 0:
				out = append(out, fmt.Sprintf("%s: metric %s is not exported", q.where, sel.Name))
			case !s.has(sel):
				out = append(out, fmt.Sprintf("%s: no series of %s matches %v", q.where, sel.Name, sel.Matchers))
			}
		}
		labels := s.labelNames(names)
		for _, sel := range q.info.Selectors {
			for _, m := range sel.Matchers {
				if !recorded[sel.Name] && !labels[m.Label] {
					out = append(out, fmt.Sprintf("%s: %s has no label %s", q.where, sel.Name, m.Label))
				}
			}
		}
		for _, l := range q.info.Grouping {
			if !labels[l] {
				out = append(out, fmt.Sprintf("%s: groups by label %s, which none of %v has", q.where, l, names))
			}
		}
	}
	for name := range inputs {
		if !recorded[name] && len(s[name]) == 0 {
			out = append(out, fmt.Sprintf("%s: input series %s is not exported", rulesTestFile, name))
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// usedNames are the exported metric names the queries need.
func usedNames(queries []query, recorded map[string]bool) []string {
	var out []string
	for _, q := range queries {
		for _, name := range q.info.Names() {
			if !recorded[name] {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// --- promtool ------------------------------------------------------------------------------

// promtool returns the promtool to run: $PROMTOOL, or the one on PATH. Without it the spec
// fails: `make promtool` installs it.
func promtool() string {
	GinkgoHelper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		Fail("promtool is not on PATH (nor named by $PROMTOOL): `make promtool` installs it, from Debian's package prometheus")
	}
	return p
}

// runPromtool runs promtool in dir and fails with its output when it fails.
func runPromtool(ctx context.Context, dir string, args ...string) string {
	GinkgoHelper()
	cmd := exec.CommandContext(ctx, promtool(), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "promtool %s (in %s) failed:\n%s", strings.Join(args, " "), dir, out)
	return string(out)
}

// grafanaIntervals stand for Grafana's interval variables when promtool reads a panel query.
var grafanaIntervals = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__interval}", "1m", "$__interval", "1m",
	"${__range}", "1h", "$__range", "1h",
)

// grafanaVariable finds the variables a query names: $name, ${name}, ${name:format}.
var grafanaVariable = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// --- the specs -----------------------------------------------------------------------------

var _ = Describe("the alerting rules", func() {
	It("pass promtool check rules and promtool test rules", func(ctx SpecContext) {
		out := runPromtool(ctx, deployDir, "check", "rules", rulesFile)
		Expect(out).To(ContainSubstring("SUCCESS"))
		out = runPromtool(ctx, deployDir, "test", "rules", rulesTestFile)
		Expect(out).To(ContainSubstring("SUCCESS"))
	}, SpecTimeout(2*time.Minute))

	It("give every alert a for, a severity and annotations that name the manager", func() {
		for _, r := range loadRules() {
			if r.Alert == "" {
				Expect(r.Record).To(ContainSubstring(":"), "a recording rule's name holds colons")
				continue
			}
			Expect(r.For).NotTo(BeEmpty(), "alert %s: no for", r.Alert)
			Expect(r.Labels).To(HaveKeyWithValue("severity", BeElementOf("critical", "warning")), "alert %s", r.Alert)
			Expect(r.Annotations).To(HaveKeyWithValue("summary", ContainSubstring("$labels.job")), "alert %s", r.Alert)
			Expect(r.Annotations).To(HaveKeyWithValue("description", ContainSubstring("$labels.job")), "alert %s", r.Alert)
			info, err := parsePromQL(r.Expr)
			Expect(err).NotTo(HaveOccurred())
			// What an alert is about, it names: the controller, the replica, the component, ...
			for _, l := range info.Grouping {
				if slices.Contains([]string{"controller", "instance", "component", "prefix", "name"}, l) {
					Expect(r.Annotations["description"]).To(ContainSubstring("$labels."+l), "alert %s groups by %s", r.Alert, l)
				}
			}
		}
	})

	It("are each unit-tested firing and silent", func() {
		var f ruleTestFile
		loadYAML(filepath.Join(deployDir, rulesTestFile), &f)
		fires, silent := map[string]bool{}, map[string]bool{}
		for _, t := range f.Tests {
			for _, a := range t.AlertRuleTests {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
		}
		for _, r := range loadRules() {
			if r.Alert != "" {
				Expect(fires).To(HaveKey(r.Alert), "no test shows %s firing", r.Alert)
				Expect(silent).To(HaveKey(r.Alert), "no test shows %s silent", r.Alert)
			}
		}
	})
})

var _ = Describe("the dashboard", func() {
	It("is complete: variables, a query in every panel, the data source variable used", func() {
		d := loadDashboard()
		Expect(d.UID).NotTo(BeEmpty())
		Expect(d.Title).NotTo(BeEmpty())
		Expect(d.SchemaVersion).To(BeNumerically(">=", 36))
		vars := map[string]string{} // name -> type
		dsVar := ""
		for _, v := range d.Templating.List {
			vars[v.Name] = v.Type
			if v.Type == "datasource" {
				Expect(templateQuery(v.Query)).To(Equal("prometheus"), "data source variable %s", v.Name)
				dsVar = v.Name
			}
		}
		Expect(dsVar).NotTo(BeEmpty(), "no Prometheus data source variable")
		Expect(vars).To(HaveKeyWithValue("job", "query"))
		Expect(vars).To(HaveKeyWithValue("controller", "query"))
		usesDS := func(ref *datasourceRef) bool {
			return ref != nil && (ref.UID == "${"+dsVar+"}" || ref.UID == "$"+dsVar)
		}
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				Expect(usesDS(v.Datasource)).To(BeTrue(), "variable %s does not query ${%s}", v.Name, dsVar)
			}
		}

		panels := d.queryPanels()
		Expect(panels).NotTo(BeEmpty())
		ids := map[int]bool{}
		var names []string
		for _, p := range panels {
			Expect(ids).NotTo(HaveKey(p.ID), "panel %q: id %d used twice", p.Title, p.ID)
			ids[p.ID] = true
			Expect(p.Title).NotTo(BeEmpty())
			Expect(usesDS(p.Datasource)).To(BeTrue(), "panel %q does not use ${%s}", p.Title, dsVar)
			Expect(p.Targets).NotTo(BeEmpty(), "panel %q has no query", p.Title)
			refs := map[string]bool{}
			for _, t := range p.Targets {
				Expect(strings.TrimSpace(t.Expr)).NotTo(BeEmpty(), "panel %q query %s is empty", p.Title, t.RefID)
				Expect(refs).NotTo(HaveKey(t.RefID), "panel %q: refId %s used twice", p.Title, t.RefID)
				refs[t.RefID] = true
				if t.Datasource != nil {
					Expect(usesDS(t.Datasource)).To(BeTrue(), "panel %q query %s does not use ${%s}", p.Title, t.RefID, dsVar)
				}
				for _, m := range grafanaVariable.FindAllStringSubmatch(t.Expr, -1) {
					if !strings.HasPrefix(m[1], "__") {
						Expect(vars).To(HaveKey(m[1]), "panel %q query %s names an unknown variable", p.Title, t.RefID)
					}
				}
				info, err := parsePromQL(t.Expr)
				Expect(err).NotTo(HaveOccurred())
				names = append(names, info.Names()...)
			}
		}
		// No two panels overlap.
		for i, a := range panels {
			for _, b := range panels[i+1:] {
				overlap := a.GridPos.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < a.GridPos.X+a.GridPos.W &&
					a.GridPos.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < a.GridPos.Y+a.GridPos.H
				Expect(overlap).To(BeFalse(), "panels %q and %q overlap", a.Title, b.Title)
			}
		}
		// The panels an operator looks for.
		Expect(names).To(ContainElements(
			"etcdkit_leader", "etcdkit_shards_owned", "controller_runtime_reconcile_total",
			"controller_runtime_reconcile_time_seconds_bucket", "workqueue_depth",
			"workqueue_work_duration_seconds_bucket", "workqueue_retries_total",
			"etcdkit_fenced_writes_total", "etcdkit_source_relists_total",
			"etcdkit_permanent_error", "controller_runtime_active_workers",
		))
	})

	It("has queries promtool reads", func(ctx SpecContext) {
		type recording struct {
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		}
		var rules []recording
		for _, p := range loadDashboard().queryPanels() {
			for _, t := range p.Targets {
				rules = append(rules, recording{
					Record: fmt.Sprintf("dashboard:panel_%d:%s", p.ID, strings.ToLower(t.RefID)),
					Expr:   grafanaIntervals.Replace(t.Expr),
				})
			}
		}
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
		Expect(err).NotTo(HaveOccurred())
		dir := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(dir, "dashboard-rules.yml"), b, 0o644)).To(Succeed())
		runPromtool(ctx, dir, "check", "rules", "dashboard-rules.yml")
	}, SpecTimeout(time.Minute))
})

var _ = Describe("a manager's /metrics", func() {
	It("exports every series the rules and the dashboard query", func(ctx SpecContext) {
		queries, recorded := allQueries()
		used := usedNames(queries, recorded)
		inputs := testInputNames()

		c := etcdtest.New(GinkgoT())
		mgr, err := manager.New(manager.Options{
			Client: c.Client(), Name: "monitoring", ID: "r1", LeaseTTL: 2 * time.Second,
			MetricsAddr: "127.0.0.1:0", GracefulShutdownTimeout: 10 * time.Second,
			Sharding: &manager.ShardingOptions{Shards: 4},
		})
		Expect(err).NotTo(HaveOccurred())
		out, err := store.New[string](c.Client(), "/mon/out/", store.Options[string]{})
		Expect(err).NotTo(HaveOccurred())

		// The leader-only controller ends each key's first reconcile as its name says, so
		// that every outcome's series exists; the next reconcile of the key succeeds.
		var mu sync.Mutex
		seen := map[string]int{}
		outcome := func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			mu.Lock()
			seen[req.Key]++
			first := seen[req.Key] == 1
			mu.Unlock()
			if !first {
				return reconcile.Result{}, nil
			}
			switch strings.TrimPrefix(req.Key, "/mon/jobs/") {
			case "requeue":
				return reconcile.Result{Requeue: true}, nil
			case "after":
				return reconcile.Result{RequeueAfter: 10 * time.Millisecond}, nil
			case "error":
				return reconcile.Result{}, errors.New("failing once")
			case "terminal":
				return reconcile.Result{}, reconcile.TerminalError(errors.New("failing for good"))
			case "panic":
				panic("panicking once")
			case "fenced":
				// A write under a fence that does not hold, as after a lost leadership.
				lost := fence.With(ctx, fence.Fence{
					Cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/mon/no-such-lease"), "=", 1)},
					Holder: "a leadership that has ended",
				})
				v := "x"
				_, err := out.Create(lost, "/mon/out/fenced", &v)
				return reconcile.Result{}, err
			}
			return reconcile.Result{}, nil
		}
		Expect(manager.NewControllerManagedBy(mgr).Named("jobs").LeaderOnly().
			For(source.Prefix("/mon/jobs/")).
			WithOptions(reconcile.Options{BaseDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond}).
			Complete(reconcile.Func(outcome))).To(Succeed())
		Expect(manager.NewControllerManagedBy(mgr).Named("shards").
			For(source.Prefix("/mon/shards/")).
			Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
				return reconcile.Result{}, nil
			}))).To(Succeed())

		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(runCtx) }()
		defer func() {
			stop()
			Eventually(done, 30*time.Second).Should(Receive(BeNil()))
		}()

		By("scraping the manager once it leads and owns its shards, before any reconcile")
		Eventually(mgr.IsLeader).Should(BeTrue())
		Eventually(mgr.MetricsAddr).ShouldNot(BeEmpty())
		addr := mgr.MetricsAddr()
		Eventually(func(g Gomega) {
			s, err := fetchMetrics(addr)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(s["etcdkit_leader"]).To(HaveLen(1))
			g.Expect(s["etcdkit_shards_owned"]).To(HaveLen(1))
			st, _ := mgr.ShardStatus(ctx)
			g.Expect(st.Owned).To(HaveLen(4))
		}).Should(Succeed())
		start, err := fetchMetrics(addr)
		Expect(err).NotTo(HaveOccurred())

		By("reconciling every outcome, then scraping again")
		for _, k := range []string{"ok", "requeue", "after", "error", "terminal", "panic", "fenced"} {
			_, err := c.Client().Put(ctx, "/mon/jobs/"+k, "v")
			Expect(err).NotTo(HaveOccurred())
		}
		for i := range 8 {
			_, err := c.Client().Put(ctx, fmt.Sprintf("/mon/shards/%d", i), "v")
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func(g Gomega) {
			s, err := fetchMetrics(addr)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(problems(s, queries, recorded, inputs)).To(BeEmpty())
		}, 30*time.Second).Should(Succeed())

		By("checking that every queried series existed before its first event")
		var missing []string
		for _, name := range used {
			if len(start[name]) == 0 {
				missing = append(missing, name)
			}
		}
		// A series born at its first increment cannot tell "none yet" from "not scraped", and
		// a counter born at 1 hides its first event from increase().
		Expect(missing).To(BeEmpty(), "queried, but not exported before their first event (the manager should create them with the controller)")
	}, SpecTimeout(2*time.Minute))
})
