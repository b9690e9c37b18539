package rangecheck_test

import (
	"context"
	"strings"
	"testing"

	"github.com/etcdkit/etcdkit/test/etcdtest"
	"github.com/etcdkit/etcdkit/test/rangecheck"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// TestCatches writes a history with two overlapping owned slices and a write from a
// member that owned no slice of its key, and one without either, and checks the verdicts.
func TestCatches(t *testing.T) {
	c := etcdtest.New(t)
	cli := c.Client()
	ctx := context.Background()
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		t.Helper()
		if _, err := cli.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	write := func(key string, value []byte) (string, string, bool) {
		name, ok := strings.CutPrefix(key, "/out/")
		return name, string(value), ok
	}
	check := func(root string) rangecheck.Report {
		t.Helper()
		rep, err := rangecheck.Check(ctx, cli, root, write)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	// A correct history: a split, the old slice released before its parts are claimed.
	put("/good/slices", `{"map":{"slices":[{"id":1,"lo":"","hi":""}],"next":2}}`)
	put("/good/owners/1", "a")
	put("/out/k", "a")
	put("/good/slices", `{"map":{"slices":[{"id":2,"lo":"","hi":"m"},{"id":3,"lo":"m","hi":""}],"next":4},"retired":[{"id":1,"lo":"","hi":""}]}`)
	del("/good/owners/1")
	put("/good/owners/3", "b")
	put("/out/x", "b")
	if rep := check("/good/"); len(rep.Violations) > 0 || rep.Writes != 2 || rep.Slices != 3 {
		t.Fatalf("correct history: %+v", rep)
	}

	// A part claimed while the retired slice is still owned, and a write from a member
	// that owns nothing of its key.
	put("/bad/slices", `{"map":{"slices":[{"id":1,"lo":"","hi":""}],"next":2}}`)
	put("/bad/owners/1", "a")
	put("/bad/slices", `{"map":{"slices":[{"id":2,"lo":"","hi":"m"},{"id":3,"lo":"m","hi":""}],"next":4},"retired":[{"id":1,"lo":"","hi":""}]}`)
	put("/bad/owners/3", "b")
	put("/out/a", "b")
	rep := check("/bad/")
	var overlap, stray bool
	for _, v := range rep.Violations {
		overlap = overlap || strings.Contains(v, "both owned")
		stray = stray || strings.Contains(v, "/out/a written by b")
	}
	if !overlap || !stray {
		t.Fatalf("the broken history's violations %q miss the overlap or the stray write", rep.Violations)
	}
}
