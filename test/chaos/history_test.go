//go:build unix

package chaos_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// record is one line of a workload process's history file (JSON lines).
type record struct {
	// Op is what the record tells: "out" (a write of /out/ by a controller member),
	// "hold" (a lock holder acquired the lock), "read" (a lock holder read the counter),
	// "cas" (a lock holder is about to send a write of the counter: the call, logged
	// before it so that a write cut short by kill -9 is known), "inc" (the write's outcome),
	// "elected" (a candidate's leadership began), "lead" (a write of /leader/out/ by a leader);
	// a registrar's "register", "deregister", "set", "delete" (Key the instance's or the
	// configuration key's number, Value the step), "ready" (it handles SIGUSR1) and "quiet"
	// (it stopped changing anything); a viewer's "view" (Key "discovery" or "config", Value
	// the view; Result "final" at exit).
	Op    string `json:"op"`
	Proc  string `json:"proc"`
	Key   string `json:"key,omitempty"`
	Shard int    `json:"shard,omitempty"`
	Token int64  `json:"token,omitempty"`
	// Value is what was written: the item's value copied (out) or the counter's value (inc).
	Value string `json:"value,omitempty"`
	// Result: written (etcd accepted it, at Rev), unchanged (nothing to write), fenced
	// (refused by the fence), conflict (refused by the mod revision), lost (the lock was
	// lost), unknown (no answer: it may have been applied) or error.
	Result string `json:"result,omitempty"`
	Rev    int64  `json:"rev,omitempty"`
	Err    string `json:"err,omitempty"`
	// Call is when the operation began (read, cas, inc), Unix ns; T is when it ended.
	Call int64 `json:"call,omitempty"`
	T    int64 `json:"t"` // wall time, Unix ns
}

func (r record) String() string {
	s := fmt.Sprintf("%s %s %s", time.Unix(0, r.T).Format("15:04:05.000"), r.Proc, r.Op)
	if r.Key != "" {
		s += " " + r.Key
	}
	if r.Op == "out" {
		s += fmt.Sprintf(" shard %d", r.Shard)
	}
	s += fmt.Sprintf(" token %d", r.Token)
	if r.Value != "" {
		s += fmt.Sprintf(" value %q", r.Value)
	}
	if r.Result != "" {
		s += " " + r.Result
	}
	if r.Rev != 0 {
		s += fmt.Sprintf(" at revision %d", r.Rev)
	}
	if r.Err != "" {
		s += ": " + r.Err
	}
	return s
}

// historyFile appends records, one write(2) each on an O_APPEND file, so that a record is
// on disk as soon as it is written even if the process is killed right after.
type historyFile struct {
	mu sync.Mutex
	f  *os.File
}

func openHistory(path string) (*historyFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &historyFile{f: f}, nil
}

func (h *historyFile) write(r record) {
	r.T = time.Now().UnixNano()
	b, _ := json.Marshal(r) // strings and numbers: it always encodes
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.f.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "writing the history:", err)
	}
}

func (h *historyFile) close() error { return h.f.Close() }

// readHistory reads a history file. A last line without its newline (a process killed
// while writing it) is left out.
func readHistory(path string) ([]record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}
