package reconcile

import "github.com/etcdkit/etcdkit/source"

// EventHandler maps a source event to the requests it should cause: any
// func(source.Event) []Request is one, for example one that maps a changed child key to
// its owner's key. Returning nil queues nothing.
type EventHandler func(e source.Event) []Request

// EnqueueKey reconciles the key that changed.
func EnqueueKey() EventHandler {
	return func(e source.Event) []Request { return []Request{{Key: e.Key}} }
}
