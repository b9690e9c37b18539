package lease

import (
	"fmt"
	"time"
)

// MaxTTL is the longest lease etcd grants, 9,000,000,000 seconds (etcd's MaxLeaseTTL): a
// longer one is refused with "etcdserver: too large lease TTL" at every Grant.
const MaxTTL = 9_000_000_000 * time.Second

// CheckTTL checks the TTL of an option, def when it is 0, and returns it with its whole
// seconds, as Grant takes them. Its error names what (an option such as "manager:
// LeaseTTL") when ttl is not a whole number of seconds (etcd leases count seconds) or lies
// outside [min, MaxTTL].
func CheckTTL(what string, ttl, def, min time.Duration) (time.Duration, int, error) {
	if ttl == 0 {
		ttl = def
	}
	switch {
	case ttl%time.Second != 0:
		return ttl, 0, fmt.Errorf("%s must be a whole number of seconds (etcd leases count seconds), got %s", what, ttl)
	case ttl < min:
		return ttl, 0, fmt.Errorf("%s must be at least %s, got %s", what, min, ttl)
	case ttl > MaxTTL:
		return ttl, 0, fmt.Errorf("%s must be at most %s (etcd's longest lease), got %s", what, MaxTTL, ttl)
	}
	return ttl, int(ttl / time.Second), nil
}
