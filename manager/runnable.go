package manager

import "context"

// Runnable is work the manager starts with Start and stops by cancelling its context.
// Start blocks until the work ends; an error stops the whole manager.
type Runnable interface {
	Start(ctx context.Context) error
}

// RunnableFunc adapts a function to a Runnable.
type RunnableFunc func(ctx context.Context) error

// Start calls f.
func (f RunnableFunc) Start(ctx context.Context) error { return f(ctx) }

// LeaderElectionRunnable says whether a Runnable may run only on the leader. A Runnable
// that does not implement it runs only on the leader (controller-runtime's rule), and is
// started again each time the replica becomes the leader.
type LeaderElectionRunnable interface {
	NeedLeaderElection() bool
}

// needsLeader reports whether r runs only on the leader.
func needsLeader(r Runnable) bool {
	if le, ok := r.(LeaderElectionRunnable); ok {
		return le.NeedLeaderElection()
	}
	return true
}

// everywhere wraps a function as a Runnable that runs on every replica.
type everywhere RunnableFunc

func (e everywhere) Start(ctx context.Context) error { return e(ctx) }
func (everywhere) NeedLeaderElection() bool          { return false }
