//go:build unix

package chaos_test

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const checkLinear = "linearizable"

// The linearizability check of the counter, with Porcupine: the lock holders' reads of the
// counter and their writes of it (compare-and-set from the value read to the next), each
// with its call and return times from the holder's history, must be explainable by one
// register that changes at one instant within each operation.
const (
	linearWindow  = 200             // operations a window holds at least, when it can be cut
	linearTimeout = 5 * time.Second // a window's budget: Unknown past it counts as a failure
)

// linInput is an operation on the counter: a read, or a write of to when it holds from.
type linInput struct {
	read     bool
	from, to int
}

// linOp is an operation of the check, with what the excerpts show of it.
type linOp struct {
	porcupine.Operation
	desc string
}

// counterModel is the counter as a register of integers. A state of -1 is unknown (never
// used: each window starts from the state the windows before it left).
var counterModel = porcupine.Model{
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		s, in := state.(int), input.(linInput)
		if in.read {
			n := output.(int)
			return s == n, s
		}
		if s != in.from {
			return false, s
		}
		return true, in.to
	},
	DescribeOperation: func(input, output any) string {
		in := input.(linInput)
		if in.read {
			return fmt.Sprintf("read %d", output.(int))
		}
		return fmt.Sprintf("cas %d→%d", in.from, in.to)
	},
}

// counterOps builds the operations from the holders' histories. A read is complete when
// logged. A write is kept only when it was applied: its outcome says so ("written"), or,
// when its outcome is unknown (no answer, or the process killed before it logged one),
// etcd's history has its value (values are unique), and it then returns when the
// recorder received it (the apply came before). Writes refused or never applied change
// nothing and are left out.
func counterOps(evs []event, hists map[string][]record) (ops []linOp, applied int) {
	seen := map[string]time.Time{}
	for _, e := range evs {
		if e.put && e.key == counterKey {
			if _, dup := seen[e.value]; !dup {
				seen[e.value] = e.at
			}
		}
	}
	var ids []string
	for id := range hists {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for client, id := range ids {
		rs := hists[id]
		outcome := map[string]record{} // a write's outcome, by its value
		for _, r := range rs {
			if r.Op == "inc" && r.Value != "" {
				outcome[r.Value] = r
			}
		}
		for _, r := range rs {
			switch r.Op {
			case "read":
				v, err := parseCounter(r.Value)
				if err != nil {
					continue
				}
				ops = append(ops, linOp{porcupine.Operation{ClientId: client, Input: linInput{read: true}, Output: v.n, Call: r.Call, Return: r.T},
					fmt.Sprintf("%s read %q", id, r.Value)})
			case "cas":
				v, err := parseCounter(r.Value)
				if err != nil {
					continue
				}
				ret := int64(0)
				o, logged := outcome[r.Value]
				switch {
				case logged && o.Result == "written":
					ret = o.T
				case logged && (o.Result == "conflict" || o.Result == "lost"):
					continue // refused: nothing changed
				default: // unknown, error after a lost answer, or killed: etcd tells
					at, ok := seen[r.Value]
					if !ok {
						continue
					}
					ret = max(at.UnixNano(), r.Call)
				}
				applied++
				ops = append(ops, linOp{porcupine.Operation{ClientId: client, Input: linInput{from: v.n - 1, to: v.n}, Output: 0, Call: r.Call, Return: ret},
					fmt.Sprintf("%s cas %q (%s)", id, r.Value, o.Result)})
			}
		}
	}
	slices.SortFunc(ops, func(a, b linOp) int { return cmp.Compare(a.Call, b.Call) })
	return ops, applied
}

// checkLinearHistory checks the counter's operations in windows: a window ends, once it
// holds linearWindow operations, at an instant when no operation is in flight; the next
// one starts from the value the windows before left (the highest written: every write
// adds one). A window found not linearizable, or not decided within linearTimeout, is a
// violation.
func checkLinearHistory(evs []event, hists map[string][]record) (vs []violation, checked, windows int) {
	ops, _ := counterOps(evs, hists)
	state := 0
	for start := 0; start < len(ops); {
		end, maxRet := start, int64(0)
		for end < len(ops) {
			maxRet = max(maxRet, ops[end].Return)
			end++
			if end-start >= linearWindow && end < len(ops) && maxRet < ops[end].Call {
				break
			}
		}
		win := ops[start:end]
		history := make([]porcupine.Operation, len(win))
		for i, o := range win {
			history[i] = o.Operation
		}
		m := counterModel
		init := state
		m.Init = func() any { return init }
		res := porcupine.CheckOperationsTimeout(m, history, linearTimeout)
		windows++
		checked += len(win)
		if res != porcupine.Ok {
			what := "is not linearizable"
			if res == porcupine.Unknown {
				what = fmt.Sprintf("was not decided within %s", linearTimeout)
			}
			var ex []string
			for _, o := range suspects(win, init) {
				ex = append(ex, fmt.Sprintf("op:   %s, %s to %s", o.desc,
					time.Unix(0, o.Call).Format("15:04:05.000000"), time.Unix(0, o.Return).Format("15:04:05.000000")))
			}
			vs = append(vs, violation{checkLinear, fmt.Sprintf("the counter's history from %s (%d operations, from the value %d) %s",
				time.Unix(0, win[0].Call).Format("15:04:05.000"), len(win), init, what), ex})
		}
		for _, o := range win {
			if in := o.Input.(linInput); !in.read {
				state = max(state, in.to)
			}
		}
		start = end
	}
	return vs, checked, windows
}

// suspects are the operations of a window to show: those that do not follow from the one
// before when replayed in the order of their calls (with the one before each), at most 8,
// or the window's first ones.
func suspects(win []linOp, init int) []linOp {
	var out []linOp
	s := init
	for i, o := range win {
		ok, next := counterModel.Step(s, o.Input, o.Output)
		if !ok && len(out) < 8 {
			if i > 0 {
				out = append(out, win[i-1])
			}
			out = append(out, o)
		}
		if ok {
			s = next.(int)
		} else if in := o.Input.(linInput); !in.read {
			s = in.to
		}
	}
	if len(out) == 0 {
		out = win[:min(len(win), 8)]
	}
	return out[:min(len(out), 8)]
}

// TestLinearCheckerCatches feeds the linearizability checker histories that a broken
// counter would give (a stale read, a lost update, a write applied twice) and one that a
// correct counter gives: it must reject the first three and accept the last.
func TestLinearCheckerCatches(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) int64 { return t0.Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	read := func(p string, n, call, ret int) []record {
		return []record{{Op: "read", Proc: p, Key: counterKey, Value: counterValue{n: n, token: 1, holder: p}.String(), Call: at(call), T: at(ret)}}
	}
	write := func(p string, n, call, ret int) []record {
		v := counterValue{n: n, token: 1, holder: p}.String()
		return []record{
			{Op: "cas", Proc: p, Key: counterKey, Value: v, Call: at(call), T: at(call)},
			{Op: "inc", Proc: p, Key: counterKey, Value: v, Result: "written", Call: at(call), T: at(ret)},
		}
	}
	cat := func(rs ...[]record) []record { return slices.Concat(rs...) }
	for _, c := range []struct {
		name  string
		hists map[string][]record
		ok    bool
	}{
		{"stale read", map[string][]record{
			"a": cat(read("a", 0, 0, 5), write("a", 1, 6, 10)),
			"b": read("b", 0, 20, 30), // 1 was written by 10
		}, false},
		{"lost update", map[string][]record{
			"a": cat(read("a", 0, 0, 5), write("a", 1, 6, 10)),
			"b": cat(read("b", 0, 1, 4), write("b", 1, 11, 15)), // from 0 again, after a's
		}, false},
		{"read from the future", map[string][]record{
			"a": read("a", 1, 0, 5),
			"b": write("b", 1, 10, 15),
		}, false},
		{"concurrent and correct", map[string][]record{
			"a": cat(read("a", 0, 0, 5), write("a", 1, 6, 20), read("a", 2, 30, 31)),
			"b": cat(read("b", 0, 1, 2), write("b", 2, 8, 25)), // concurrent with a's: either order
			"c": read("c", 1, 9, 12),
		}, true},
	} {
		vs, checked, _ := checkLinearHistory(nil, c.hists)
		if c.ok && len(vs) > 0 {
			t.Errorf("%s: %d operations, rejected: %v", c.name, checked, vs)
		}
		if !c.ok && len(vs) == 0 {
			t.Errorf("%s: %d operations, accepted", c.name, checked)
		}
	}
}
