package ranges

import (
	"sort"
	"strings"
)

// SliceKey is the default slice key of a key's suffix below a watched prefix: its first
// path segment.
func SliceKey(suffix string) string {
	if i := strings.IndexByte(suffix, '/'); i >= 0 {
		return suffix[:i]
	}
	return suffix
}

// Range is a range of etcd keys [Start, End); End "" means every key from Start on, as
// etcd's range end "\x00" does.
type Range struct {
	Start, End string
}

// Contains reports whether key is in r.
func (r Range) Contains(key string) bool {
	return key >= r.Start && (r.End == "" || key < r.End)
}

// empty reports whether r holds no key.
func (r Range) empty() bool { return r.End != "" && r.End <= r.Start }

// shadowed returns the slice-key values s that are proper prefixes of bound with a byte
// below '/' after them: the children "s/..." of each sort after bound although s sorts
// before it.
func shadowed(bound string) []string {
	var out []string
	for i := 0; i < len(bound); i++ {
		if bound[i] < '/' {
			out = append(out, bound[:i])
		}
	}
	return out
}

// children is the etcd range of the keys "s/..." below prefix.
func children(prefix, s string) Range {
	return Range{Start: prefix + s + "/", End: prefix + s + "0"} // '0' follows '/'
}

// KeyRanges returns the etcd ranges that hold exactly the keys below prefix whose slice
// key (SliceKey of the suffix) is in [lo, hi), where hi "" is no upper bound. The ranges
// are disjoint and in order; none is empty. Keys whose suffix starts with '/' have the
// slice key "" and are in the first slice.
func KeyRanges(prefix, lo, hi string) []Range {
	if hi != "" && hi <= lo {
		return nil
	}
	main := Range{Start: prefix + lo, End: prefix + hi}
	if hi == "" {
		main.End = prefixEnd(prefix)
	}
	// Holes: children of slice keys below lo that sort at or after prefix+lo.
	var holes []Range
	for _, s := range shadowed(lo) {
		holes = append(holes, children(prefix, s))
	}
	out := cut(main, holes)
	// Extras: children of slice keys in [lo, hi) that sort at or after prefix+hi.
	if hi != "" {
		for _, s := range shadowed(hi) {
			if s >= lo {
				out = append(out, children(prefix, s))
			}
		}
	}
	return normalize(out)
}

// prefixEnd is the end of the range of every key with prefix (etcd's GetPrefixRangeEnd);
// "" when there is none (every key from prefix on).
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// cut returns r less the holes.
func cut(r Range, holes []Range) []Range {
	out := []Range{r}
	for _, h := range holes {
		var next []Range
		for _, p := range out {
			next = append(next, minus(p, h)...)
		}
		out = next
	}
	return out
}

// minus returns the parts of p outside h.
func minus(p, h Range) []Range {
	// No overlap: h ends before p starts, or starts after p ends.
	if (h.End != "" && h.End <= p.Start) || (p.End != "" && h.Start >= p.End) {
		return []Range{p}
	}
	var out []Range
	if h.Start > p.Start {
		out = append(out, Range{Start: p.Start, End: h.Start})
	}
	if h.End != "" && (p.End == "" || h.End < p.End) {
		out = append(out, Range{Start: h.End, End: p.End})
	}
	return out
}

// normalize drops empty ranges, sorts the rest and joins those that touch.
func normalize(rs []Range) []Range {
	var out []Range
	for _, r := range rs {
		if !r.empty() {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	joined := out[:0]
	for _, r := range out {
		if n := len(joined); n > 0 && joined[n-1].End != "" && joined[n-1].End >= r.Start {
			if r.End == "" || r.End > joined[n-1].End {
				joined[n-1].End = r.End
			}
			continue
		}
		joined = append(joined, r)
	}
	return joined
}
