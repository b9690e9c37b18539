package rangecheck

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Write names the slice key of an output write and the member that made it; ok is false
// for a key that is not an output.
type Write func(key string, value []byte) (sliceKey, writer string, ok bool)

// bounds is a slice's range of slice keys; Hi "" is no bound.
type bounds struct{ Lo, Hi string }

func (b bounds) overlaps(o bounds) bool {
	return (o.Hi == "" || b.Lo < o.Hi) && (b.Hi == "" || o.Lo < b.Hi)
}

func (b bounds) holds(sk string) bool { return sk >= b.Lo && (b.Hi == "" || sk < b.Hi) }

// storedMap is the part of <root>slices that the checks read.
type storedMap struct {
	Map struct {
		Slices []slice `json:"slices"`
	} `json:"map"`
	Retired []slice `json:"retired"`
}

type slice struct {
	ID int64  `json:"id"`
	Lo string `json:"lo"`
	Hi string `json:"hi"`
}

// Tracker follows the slices of a range-sharded manager through etcd's history, fed one
// event at a time in revision order: the bounds of every slice ever in its map (IDs are
// never reused) and the owner of every owned slice.
type Tracker struct {
	root  string
	known map[int64]bounds
	owned map[int64]string
}

// NewTracker returns a tracker of the manager whose root is root.
func NewTracker(root string) *Tracker {
	return &Tracker{root: root, known: map[int64]bounds{}, owned: map[int64]string{}}
}

// Apply takes one event: a put (value set) or a delete of key. Keys outside the manager's
// slice map and owners are ignored.
func (t *Tracker) Apply(key string, put bool, value []byte) error {
	switch {
	case key == t.root+"slices" && put:
		var m storedMap
		if err := json.Unmarshal(value, &m); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		for _, s := range append(m.Map.Slices, m.Retired...) {
			t.known[s.ID] = bounds{s.Lo, s.Hi}
		}
	case strings.HasPrefix(key, t.root+"owners/"):
		id, err := strconv.ParseInt(strings.TrimPrefix(key, t.root+"owners/"), 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if put {
			t.owned[id] = string(value)
		} else {
			delete(t.owned, id)
		}
	}
	return nil
}

// Overlaps describes every pair of owned slices that overlap now: at the end of a
// revision, each is a key two members could reconcile at once.
func (t *Tracker) Overlaps() []string {
	var out []string
	for a, oa := range t.owned {
		for b, ob := range t.owned {
			ba, okA := t.known[a]
			bb, okB := t.known[b]
			if a < b && okA && okB && ba.overlaps(bb) {
				out = append(out, fmt.Sprintf("slices %d %q (%s) and %d %q (%s) both owned", a, ba, oa, b, bb, ob))
			}
		}
	}
	return out
}

// Holds reports whether slice id is known and holds the slice key sk.
func (t *Tracker) Holds(id int64, sk string) bool {
	b, ok := t.known[id]
	return ok && b.holds(sk)
}

// Owns reports whether writer owns, now, a slice that holds the slice key sk.
func (t *Tracker) Owns(writer, sk string) bool {
	for id, o := range t.owned {
		if o == writer && t.Holds(id, sk) {
			return true
		}
	}
	return false
}

// Slices counts the slices ever in the map.
func (t *Tracker) Slices() int { return len(t.known) }

// Report is what Check found.
type Report struct {
	// Violations describe each revision at which two owned slices overlapped, and each
	// output write made by a member that owned no slice of its key.
	Violations []string
	// Writes counts the output writes checked; Slices the slices ever in a map.
	Writes, Slices int
	// Revision is the last revision replayed.
	Revision int64
}

// Check replays etcd's history from revision 1 up to the current revision (the history
// must not have been compacted) for the manager whose root is root.
func Check(ctx context.Context, cli *clientv3.Client, root string, write Write) (Report, error) {
	var rep Report
	now, err := cli.Get(ctx, root+"slices", clientv3.WithCountOnly())
	if err != nil {
		return rep, err
	}
	t := NewTracker(root)
	check := func(rev int64) {
		for _, v := range t.Overlaps() {
			rep.Violations = append(rep.Violations, fmt.Sprintf("revision %d: %s", rev, v))
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rev int64
	for wr := range cli.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			return rep, err
		}
		for _, ev := range wr.Events {
			if rev != 0 && ev.Kv.ModRevision != rev {
				check(rev)
			}
			rev = ev.Kv.ModRevision
			key, put := string(ev.Kv.Key), ev.Type == clientv3.EventTypePut
			if err := t.Apply(key, put, ev.Kv.Value); err != nil {
				return rep, fmt.Errorf("revision %d: %w", rev, err)
			}
			if !put {
				continue
			}
			if sk, writer, ok := write(key, ev.Kv.Value); ok {
				rep.Writes++
				if !t.Owns(writer, sk) {
					rep.Violations = append(rep.Violations, fmt.Sprintf("revision %d: %s written by %s, which owned no slice of %q", rev, key, writer, sk))
				}
			}
		}
		if rev >= now.Header.Revision || (len(wr.Events) == 0 && wr.Header.Revision >= now.Header.Revision) {
			break
		}
	}
	if rev != 0 {
		check(rev)
	}
	rep.Slices, rep.Revision = t.Slices(), rev
	return rep, nil
}
