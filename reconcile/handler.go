package reconcile

import "github.com/etcdkit/etcdkit/source"

// EventHandler maps a source event to the requests it should cause.
type EventHandler func(e source.Event) []Request

// EnqueueKey reconciles the key that changed.
func EnqueueKey() EventHandler {
	return func(e source.Event) []Request { return []Request{{Key: e.Key}} }
}

// EnqueueMapped reconciles the keys that fn derives from a change, for example the owner
// of a changed child key. Returning nil enqueues nothing.
func EnqueueMapped(fn func(e source.Event) []Request) EventHandler {
	return fn
}
