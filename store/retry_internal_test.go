package store

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestJudge pins down what a read of the key says of a write whose answer was lost: a
// write is sent again only when it certainly was not applied, and never reported as a
// conflict when the key holds what it wrote.
func TestJudge(t *testing.T) {
	kv := func(mod, version int64, value string) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: mod, Version: version, Value: []byte(value)}
	}
	for _, tc := range []struct {
		name string
		w    written
		now  *mvccpb.KeyValue
		want outcome
	}{
		{"create, key still missing", written{data: []byte("v")}, nil, notApplied},
		{"create, key holds our value at version 1", written{data: []byte("v")}, kv(7, 1, "v"), applied},
		{"create, key holds our value at version 2", written{data: []byte("v")}, kv(8, 2, "v"), unknown},
		{"create, key holds another value", written{data: []byte("v")}, kv(7, 1, "w"), unknown},
		{"update, key unchanged", written{data: []byte("v"), expected: 5}, kv(5, 3, "old"), notApplied},
		{"update, key holds our value past the read", written{data: []byte("v"), expected: 5}, kv(9, 4, "v"), applied},
		{"update, key moved to another value", written{data: []byte("v"), expected: 5}, kv(9, 4, "w"), unknown},
		{"update, key deleted", written{data: []byte("v"), expected: 5}, nil, unknown},
		{"delete, key gone", written{deleted: true, expected: 5}, nil, applied},
		{"delete, key unchanged", written{deleted: true, expected: 5}, kv(5, 2, "x"), notApplied},
		{"delete, key moved", written{deleted: true, expected: 5}, kv(6, 3, "x"), unknown},
		{"unconditional delete, key there", written{deleted: true}, kv(6, 3, "x"), notApplied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.w.judge(tc.now); got != tc.want {
				t.Fatalf("judge = %d, want %d", got, tc.want)
			}
		})
	}
}
