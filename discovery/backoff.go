package discovery

import "time"

// Retry pacing for re-registration and broken watches.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// nextBackoff doubles d up to maxBackoff.
func nextBackoff(d time.Duration) time.Duration {
	return min(2*d, maxBackoff)
}
