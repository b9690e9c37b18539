package lease_test

import (
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/internal/lease"
)

func TestCheckTTL(t *testing.T) {
	for _, tc := range []struct {
		ttl     time.Duration
		seconds int
		err     string
	}{
		{ttl: 2 * time.Second, seconds: 2},
		{ttl: time.Minute, seconds: 60},
		{ttl: lease.MaxTTL, seconds: 9_000_000_000},
		{ttl: 1500 * time.Millisecond, err: "x: TTL must be a whole number of seconds (etcd leases count seconds), got 1.5s"},
		{ttl: 2*time.Second + time.Nanosecond, err: "x: TTL must be a whole number of seconds (etcd leases count seconds), got 2.000000001s"},
		{ttl: time.Second, err: "x: TTL must be at least 2s, got 1s"},
		{ttl: 0, seconds: 10}, // the default
		{ttl: -5 * time.Second, err: "x: TTL must be at least 2s, got -5s"},
		{ttl: lease.MaxTTL + time.Second, err: "x: TTL must be at most 2500000h0m0s (etcd's longest lease), got 2500000h0m1s"},
	} {
		_, seconds, err := lease.CheckTTL("x: TTL", tc.ttl, 10*time.Second, 2*time.Second)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("CheckTTL(%s): %v", tc.ttl, err)
		case tc.err == "" && seconds != tc.seconds:
			t.Errorf("CheckTTL(%s) = %d seconds, want %d", tc.ttl, seconds, tc.seconds)
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("CheckTTL(%s) = %v, want the error %q", tc.ttl, err, tc.err)
		}
	}
}
