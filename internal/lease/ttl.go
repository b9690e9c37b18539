package lease

import "fmt"

// MaxTTL is the longest lease etcd grants, in seconds (etcd's MaxLeaseTTL): a longer one is
// refused with "etcdserver: too large lease TTL" at every Grant.
const MaxTTL = 9_000_000_000

// CheckTTL returns an error naming what (an option such as "manager: LeaseTTL") when ttl
// lies outside [min, MaxTTL] seconds.
func CheckTTL(what string, ttl, min int) error {
	switch {
	case ttl < min:
		return fmt.Errorf("%s must be at least %d seconds, got %d", what, min, ttl)
	case int64(ttl) > MaxTTL:
		return fmt.Errorf("%s must be at most %d seconds (etcd's longest lease), got %d", what, MaxTTL, ttl)
	}
	return nil
}
