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
	known := map[int64]bounds{} // every slice ever in a map: IDs are never reused
	owned := map[int64]string{}
	check := func(rev int64) {
		for a, oa := range owned {
			for b, ob := range owned {
				ba, okA := known[a]
				bb, okB := known[b]
				if a < b && okA && okB && ba.overlaps(bb) {
					rep.Violations = append(rep.Violations, fmt.Sprintf("revision %d: slices %d %q (%s) and %d %q (%s) both owned", rev, a, ba, oa, b, bb, ob))
				}
			}
		}
	}
	ownerOf := func(sk, writer string) bool {
		for id, o := range owned {
			if b, ok := known[id]; ok && o == writer && b.holds(sk) {
				return true
			}
		}
		return false
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
			key := string(ev.Kv.Key)
			switch {
			case key == root+"slices" && ev.Type == clientv3.EventTypePut:
				var m storedMap
				if err := json.Unmarshal(ev.Kv.Value, &m); err != nil {
					return rep, fmt.Errorf("revision %d: %s: %w", rev, key, err)
				}
				for _, s := range append(m.Map.Slices, m.Retired...) {
					known[s.ID] = bounds{s.Lo, s.Hi}
				}
			case strings.HasPrefix(key, root+"owners/"):
				id, err := strconv.ParseInt(strings.TrimPrefix(key, root+"owners/"), 10, 64)
				if err != nil {
					return rep, fmt.Errorf("revision %d: %s: %w", rev, key, err)
				}
				if ev.Type == clientv3.EventTypePut {
					owned[id] = string(ev.Kv.Value)
				} else {
					delete(owned, id)
				}
			case ev.Type == clientv3.EventTypePut:
				sk, writer, ok := write(key, ev.Kv.Value)
				if !ok {
					continue
				}
				rep.Writes++
				if !ownerOf(sk, writer) {
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
	rep.Slices, rep.Revision = len(known), rev
	return rep, nil
}
