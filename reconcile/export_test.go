package reconcile

import "time"

// SetClock makes the controller's tombstones age by now instead of the wall clock.
func SetClock(c *Controller, now func() time.Time) {
	c.tombs.mu.Lock()
	defer c.tombs.mu.Unlock()
	c.tombs.now = now
}
