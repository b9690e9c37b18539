// Package e2e holds end-to-end suites: managers and controllers against real etcd, in
// process and as OS processes, under the faults the design's invariants must survive.
package e2e
