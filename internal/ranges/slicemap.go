package ranges

import (
	"errors"
	"fmt"
	"sort"
)

// Slice is a contiguous range [Lo, Hi) of slice-key values; Hi "" is no upper bound. Its
// ID is unique over the map's history: a split or a merge makes slices with new IDs, so an
// ID names one range for good.
type Slice struct {
	ID int64  `json:"id"`
	Lo string `json:"lo"`
	Hi string `json:"hi"`
}

// Contains reports whether the slice key sk is in s.
func (s Slice) Contains(sk string) bool { return sk >= s.Lo && (s.Hi == "" || sk < s.Hi) }

// String shows the slice as id[lo,hi).
func (s Slice) String() string {
	hi := fmt.Sprintf("%q", s.Hi)
	if s.Hi == "" {
		hi = "∞"
	}
	return fmt.Sprintf("%d[%q,%s)", s.ID, s.Lo, hi)
}

// Map is the slice map of a controller: slices in order of Lo that cover every slice-key
// value once. Next is the ID the next new slice gets.
type Map struct {
	Slices []Slice `json:"slices"`
	Next   int64   `json:"next"`
}

// NewMap returns the map of one slice that holds every slice key.
func NewMap() Map { return Map{Slices: []Slice{{ID: 1}}, Next: 2} }

// ErrInvalid is wrapped by the errors of Validate, Split and Merge.
var ErrInvalid = errors.New("ranges: invalid slice map change")

// Validate checks that m's slices cover every slice-key value once, in order, with
// distinct IDs below Next.
func (m Map) Validate() error {
	if len(m.Slices) == 0 {
		return fmt.Errorf("%w: no slice", ErrInvalid)
	}
	ids := map[int64]bool{}
	for i, s := range m.Slices {
		switch {
		case i == 0 && s.Lo != "":
			return fmt.Errorf("%w: the first slice %s does not start at the lowest key", ErrInvalid, s)
		case i > 0 && s.Lo != m.Slices[i-1].Hi:
			return fmt.Errorf("%w: slice %s does not start where %s ends", ErrInvalid, s, m.Slices[i-1])
		case s.Hi != "" && s.Hi <= s.Lo:
			return fmt.Errorf("%w: slice %s is empty", ErrInvalid, s)
		case i < len(m.Slices)-1 && s.Hi == "":
			return fmt.Errorf("%w: slice %s is unbounded but not last", ErrInvalid, s)
		case i == len(m.Slices)-1 && s.Hi != "":
			return fmt.Errorf("%w: the last slice %s ends before the highest key", ErrInvalid, s)
		case s.ID <= 0 || s.ID >= m.Next || ids[s.ID]:
			return fmt.Errorf("%w: slice %s has an ID that is not new (next %d)", ErrInvalid, s, m.Next)
		}
		ids[s.ID] = true
	}
	return nil
}

// Find returns the slice that holds the slice key sk.
func (m Map) Find(sk string) Slice {
	i := sort.Search(len(m.Slices), func(i int) bool { return m.Slices[i].Hi == "" || sk < m.Slices[i].Hi })
	return m.Slices[min(i, len(m.Slices)-1)]
}

// index returns the position of the slice id, or -1.
func (m Map) index(id int64) int {
	for i, s := range m.Slices {
		if s.ID == id {
			return i
		}
	}
	return -1
}

// Get returns the slice id.
func (m Map) Get(id int64) (Slice, bool) {
	if i := m.index(id); i >= 0 {
		return m.Slices[i], true
	}
	return Slice{}, false
}

// Split returns m with slice id cut at the slice key at into [lo, at) and [at, hi), which
// get new IDs. at must be strictly inside the slice.
func (m Map) Split(id int64, at string) (Map, [2]Slice, error) {
	i := m.index(id)
	if i < 0 {
		return m, [2]Slice{}, fmt.Errorf("%w: no slice %d to split", ErrInvalid, id)
	}
	s := m.Slices[i]
	if at <= s.Lo || (s.Hi != "" && at >= s.Hi) {
		return m, [2]Slice{}, fmt.Errorf("%w: %q is not strictly inside slice %s", ErrInvalid, at, s)
	}
	parts := [2]Slice{{ID: m.Next, Lo: s.Lo, Hi: at}, {ID: m.Next + 1, Lo: at, Hi: s.Hi}}
	out := Map{Next: m.Next + 2, Slices: make([]Slice, 0, len(m.Slices)+1)}
	out.Slices = append(out.Slices, m.Slices[:i]...)
	out.Slices = append(out.Slices, parts[:]...)
	out.Slices = append(out.Slices, m.Slices[i+1:]...)
	return out, parts, nil
}

// Merge returns m with slice left and the slice right after it joined into one slice with
// a new ID.
func (m Map) Merge(left, right int64) (Map, Slice, error) {
	i := m.index(left)
	if i < 0 || i+1 >= len(m.Slices) || m.Slices[i+1].ID != right {
		return m, Slice{}, fmt.Errorf("%w: slices %d and %d are not neighbours", ErrInvalid, left, right)
	}
	joined := Slice{ID: m.Next, Lo: m.Slices[i].Lo, Hi: m.Slices[i+1].Hi}
	out := Map{Next: m.Next + 1, Slices: make([]Slice, 0, len(m.Slices)-1)}
	out.Slices = append(out.Slices, m.Slices[:i]...)
	out.Slices = append(out.Slices, joined)
	out.Slices = append(out.Slices, m.Slices[i+2:]...)
	return out, joined, nil
}
