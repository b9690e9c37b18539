package ranges

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// alphabet holds the bytes around '/' in etcd's order, so that keys and bounds meet every
// case of shadowing: '-' and '.' sort before '/', '0' right after it.
const alphabet = "-./0ab"

func randomString(rng *rand.Rand, max int, slash bool) string {
	n := rng.IntN(max + 1)
	var b strings.Builder
	for range n {
		c := alphabet[rng.IntN(len(alphabet))]
		if c == '/' && !slash {
			c = 'a'
		}
		b.WriteByte(c)
	}
	return b.String()
}

func inRanges(rs []Range, key string) bool {
	for _, r := range rs {
		if r.Contains(key) {
			return true
		}
	}
	return false
}

func TestSliceKey(t *testing.T) {
	for in, want := range map[string]string{"": "", "x": "x", "x/y": "x", "x/y/z": "x", "/y": "", "foo-0": "foo-0"} {
		if got := SliceKey(in); got != want {
			t.Errorf("SliceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestKeyRangesHoldExactlyTheSlice checks, for random keys and bounds, that a key is in
// the ranges of [lo, hi) exactly when its slice key is in [lo, hi), that the ranges are in
// order, disjoint and not empty, and that no key outside the prefix is in them.
func TestKeyRangesHoldExactlyTheSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const prefix = "/p/"
	for i := range 20000 {
		lo, hi := randomString(rng, 4, false), randomString(rng, 4, false)
		if hi != "" && hi < lo {
			lo, hi = hi, lo
		}
		rs := KeyRanges(prefix, lo, hi)
		for j := 1; j < len(rs); j++ {
			if rs[j-1].End == "" || rs[j-1].End >= rs[j].Start {
				t.Fatalf("case %d: ranges of [%q, %q) out of order or touching: %q", i, lo, hi, rs)
			}
		}
		for _, r := range rs {
			if r.empty() {
				t.Fatalf("case %d: empty range in %q", i, rs)
			}
		}
		for range 50 {
			suffix := randomString(rng, 6, true)
			sk := SliceKey(suffix)
			want := sk >= lo && (hi == "" || sk < hi)
			if got := inRanges(rs, prefix+suffix); got != want {
				t.Fatalf("case %d: key %q (slice key %q) in the ranges of [%q, %q) = %v, want %v; ranges %q", i, prefix+suffix, sk, lo, hi, got, want, rs)
			}
			if other := "/q/" + suffix; inRanges(rs, other) {
				t.Fatalf("case %d: key %q of another prefix is in the ranges %q", i, other, rs)
			}
		}
	}
}

// TestKeyRangesPartition cuts the slice keys at random bounds and checks that every key
// is in the ranges of exactly one slice: the one of its slice key.
func TestKeyRangesPartition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const prefix = "/jobs/"
	for i := range 2000 {
		var bounds []string
		for range rng.IntN(5) + 1 {
			if b := randomString(rng, 4, false); b != "" {
				bounds = append(bounds, b)
			}
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		los := append([]string{""}, bounds...)
		his := append(append([]string(nil), bounds...), "")
		for range 100 {
			suffix := randomString(rng, 6, true)
			in := -1
			for s := range los {
				if !inRanges(KeyRanges(prefix, los[s], his[s]), prefix+suffix) {
					continue
				}
				if in >= 0 {
					t.Fatalf("case %d: key %q in slices %d and %d of %q", i, suffix, in, s, bounds)
				}
				in = s
			}
			sk := SliceKey(suffix)
			if in < 0 || sk < los[in] || (his[in] != "" && sk >= his[in]) {
				t.Fatalf("case %d: key %q (slice key %q) in slice %d of bounds %q", i, suffix, sk, in, bounds)
			}
		}
	}
}

func TestKeyRangesOfAShadowedBound(t *testing.T) {
	// "foo" < "foo-0" < "foo/a": the children of foo belong below foo-0.
	got := KeyRanges("/p/", "", "foo-0")
	want := []Range{{"/p/", "/p/foo-0"}, {"/p/foo/", "/p/foo0"}}
	if !slices.Equal(got, want) {
		t.Errorf("KeyRanges(\"\", foo-0) = %q, want %q", got, want)
	}
	got = KeyRanges("/p/", "foo-0", "")
	want = []Range{{"/p/foo-0", "/p/foo/"}, {"/p/foo0", "/p0"}}
	if !slices.Equal(got, want) {
		t.Errorf("KeyRanges(foo-0, \"\") = %q, want %q", got, want)
	}
	if got := KeyRanges("/p/", "b", "a"); got != nil {
		t.Errorf("an empty slice has ranges %q", got)
	}
}
