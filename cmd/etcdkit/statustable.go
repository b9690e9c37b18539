package main

import (
	"fmt"
	"io"
	"time"
)

// printStatus writes status's tables: the manager, its members, its shard map.
func printStatus(w io.Writer, out statusOutput, debug bool) error {
	t := newTable(w, "MANAGER", out.Name)
	t.row("ROOT", out.Root)
	t.row("REVISION", fmt.Sprint(out.Revision))
	if l := out.Leader; l != nil {
		t.row("LEADER", fmt.Sprintf("%s (token %d, lease %s, ttl %s)", l.ID, l.Token, l.Lease, dash(ttl(l.TTL))))
	} else {
		t.row("LEADER", "none: no candidate in "+out.Root+"election/")
	}
	t.row("IN LINE", candidateIDs(out.Candidates))
	switch sh := out.Sharding; {
	case out.Mode == "ranges":
		t.row("SHARDING", fmt.Sprintf("range mode, %d slices", len(out.Slices)))
	case sh == nil:
		t.row("SHARDING", "off (leader-only manager)")
	case sh.Settled:
		t.row("SHARDING", fmt.Sprintf("%d shards, settled", sh.Shards))
	default:
		t.row("SHARDING", fmt.Sprintf("%d shards, not settled", sh.Shards))
	}
	if err := t.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(out.Members) == 0 {
		fmt.Fprintf(w, "no members registered under %smembers/ (a leader-only manager's replicas are its election's candidates)\n", out.Root)
	} else {
		header := []string{"MEMBER", "STATE", "ADDRESS", "STARTED", "LEASE", "ASSIGNED", "OWNED"}
		if debug {
			header = append(header, "DEBUG", "QUEUED", "IN FLIGHT", "DRAINING")
		}
		t = newTable(w, header...)
		for _, m := range out.Members {
			started := ""
			if !m.Started.IsZero() {
				started = m.Started.UTC().Format(time.RFC3339)
			}
			cells := []string{m.ID, m.State, m.Address, started, m.Lease, fmt.Sprint(m.Assigned), fmt.Sprint(m.Owned)}
			if d := m.Debug; d != nil && d.Reachable {
				cells = append(cells, "ok", fmt.Sprint(d.QueueDepth), fmt.Sprint(d.InFlight), ints(d.Draining))
			} else if d != nil {
				cells = append(cells, d.Error, "", "", "")
			}
			t.row(cells...)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	if out.Mode == "ranges" {
		return printSlices(w, out.Slices)
	}
	sh := out.Sharding
	if sh == nil {
		return nil
	}
	fmt.Fprintln(w)
	header := []string{"SHARD", "ASSIGNED", "OWNER", "TOKEN", "STATE"}
	if debug {
		header = append(header, "QUEUED", "DRAINING")
	}
	t = newTable(w, header...)
	for _, r := range sh.ShardMap {
		cells := []string{fmt.Sprint(r.Shard), r.Assigned, r.Owner, token(r.Token), r.State}
		if debug {
			q, d := "", ""
			if r.QueueDepth != nil {
				q = fmt.Sprint(*r.QueueDepth)
			}
			if r.Draining != nil {
				d = fmt.Sprint(*r.Draining)
			}
			cells = append(cells, q, d)
		}
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "assigned but not owned:", ints(sh.AssignedNotOwned))
	t.row("owned by a member not assigned:", ints(sh.OwnedNotAssigned))
	t.row("unassigned:", ints(sh.Unassigned))
	return t.flush()
}

// dash shows an empty value as "-" inside a sentence.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printSlices writes the range mode's slice map.
func printSlices(w io.Writer, rows []sliceRow) error {
	fmt.Fprintln(w)
	t := newTable(w, "SLICE", "FROM", "TO", "ASSIGNED", "OWNER", "TOKEN", "STATE")
	for _, r := range rows {
		to := fmt.Sprintf("%q", r.To)
		if r.To == "" {
			to = "(end)"
		}
		state := shardOK
		switch {
		case r.Retired:
			state = "retired"
		case r.Assigned == "":
			state = shardUnassigned
		case r.Owner == "":
			state = shardUnowned
		case r.Owner != r.Assigned:
			state = shardMoving
		}
		t.row(fmt.Sprint(r.ID), fmt.Sprintf("%q", r.From), to, r.Assigned, r.Owner, token(r.Token), state)
	}
	return t.flush()
}
