package manager_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeQuotesTheExample checks that every line of code the README's "Writing a
// reconciler" section shows stands in Example_writingAReconciler or Example_finalizers,
// which run: the README cannot drift from code that works.
func TestReadmeQuotesTheExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range []string{"reconciler_example_test.go", "finalizer_example_test.go"} {
		example, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(example), "\n") {
			have[strings.TrimSpace(l)] = true
		}
	}
	_, section, ok := strings.Cut(string(readme), "\n## Writing a reconciler\n")
	if !ok {
		t.Fatal(`README.md has no "## Writing a reconciler" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	section, _, _ = strings.Cut(section, "\n### Porting from controller-runtime")
	quoted := 0
	for _, block := range strings.Split(section, "```go\n")[1:] {
		code, _, _ := strings.Cut(block, "```")
		for _, l := range strings.Split(code, "\n") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			quoted++
			if !have[l] {
				t.Errorf("README.md shows %q, which neither reconciler_example_test.go nor finalizer_example_test.go holds", l)
			}
		}
	}
	if quoted == 0 {
		t.Fatal(`the "Writing a reconciler" section quotes no Go code`)
	}
}
