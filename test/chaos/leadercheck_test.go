//go:build unix

package chaos_test

import (
	"fmt"
	"strings"
)

const checkLeader = "leader"

// checkLeaderHistory replays etcd's history of the leader-only workload: every accepted
// write of /leader/out/ at revision R must have been made while its writer led, that is,
// while the oldest key under the election's prefix (the leader key) had the writer as its
// value and the write's token as its create revision just before R; and the tokens of
// accepted writes must never go back. Two leaderships whose accepted writes overlap break
// the first rule, since only one key is the oldest at a time.
func checkLeaderHistory(evs []event, hists map[string][]record) (vs []violation, writes int) {
	recs := recordsByRev(hists)
	var elections []event // the election's events, for the excerpts
	var last *event
	var lastTok int64
	p := newReplay()
	p.byRevision(evs, func(rev int64, es []event) {
		for _, e := range es {
			if strings.HasPrefix(e.key, electionPrefix) {
				defer func() { elections = append(elections, e) }()
			}
			if !e.put || !strings.HasPrefix(e.key, leaderOutPrefix) {
				continue
			}
			writes++
			o, err := parseLeaderOutput(e.value)
			if err != nil {
				vs = append(vs, violation{checkLeader, fmt.Sprintf("%s at revision %d: %v", e.key, rev, err), nil})
				continue
			}
			proof := func() []string {
				ex := tail(elections, 3)
				if last != nil {
					ex = append(ex, "etcd: "+last.String())
				}
				ex = append(ex, "etcd: "+e.String())
				for _, r := range recs[rev] {
					ex = append(ex, "log:  "+r.String())
				}
				return ex
			}
			var head string
			var hk kv
			for k, s := range p.state {
				if strings.HasPrefix(k, electionPrefix) && (head == "" || s.create < hk.create) {
					head, hk = k, s
				}
			}
			switch {
			case head == "":
				vs = append(vs, violation{checkLeader, fmt.Sprintf("%s written at revision %d by %s with token %d, when no candidate led",
					e.key, rev, o.Leader, o.Token), proof()})
			case hk.create != o.Token || hk.value != o.Leader:
				vs = append(vs, violation{checkLeader, fmt.Sprintf("%s written at revision %d by %s with token %d, when %s led with token %d",
					e.key, rev, o.Leader, o.Token, hk.value, hk.create), proof()})
			}
			if last != nil && o.Token < lastTok {
				vs = append(vs, violation{checkLeader, fmt.Sprintf("token %d accepted at revision %d after token %d at revision %d",
					o.Token, rev, lastTok, last.rev), proof()})
			}
			last, lastTok = &e, o.Token
		}
	})
	return vs, writes
}
