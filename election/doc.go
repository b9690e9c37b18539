// Package election elects one leader among candidates on an etcd key prefix, runs
// leader-only tasks, and coordinates a primary and a secondary function (active-passive
// high availability).
//
// # Candidates and leadership
//
// Each candidate is an Election: New(client, prefix, Options{ID, TTL, Logger}). It
// campaigns with a session, a lease of TTL (whole seconds) that it keeps alive, by putting
// a key named after the lease under the prefix with its ID as value (the layout of etcd's concurrency.Election,
// so etcdctl's `elect` and other observers understand it). The candidate whose key is
// the oldest (lowest create revision) leads; the others wait, each for the deletion of the
// key just before its own.
//
//	e, err := election.New(cli, "/myapp/election/", election.Options{ID: "node-1", TTL: 10 * time.Second, Logger: log})
//	defer e.Close()
//	e.OnElected(func() { log.Info("leading") })
//	e.OnDefeat(func() { log.Info("no longer leading") })
//	go e.Run(ctx) // campaign, lead, and campaign again after any loss, until ctx ends
//
// Campaign campaigns once and blocks until the candidate leads; Run keeps the candidate
// in the election, starting a new session after a lost one, so that nobody needs to write
// the retry loop of the guide's "Handle Connection Failures" practice.
//
// # When leadership ends
//
// A leadership ends, OnDefeat is called once, and the leader context (LeaderContext) is
// cancelled, at the first of:
//   - the session is lost: etcd says the lease is gone, or no keep-alive was answered within
//     the TTL (measured from when the last answered keep-alive was sent, so this process
//     gives up before etcd can let another candidate lead);
//   - the candidate's key disappears (it is watched);
//   - Resign is called (the key is deleted, and the next candidate leads at once);
//   - Close is called.
//
// IsLeader, LeaderContext, Token and Guard check the session's deadline themselves: a
// process that was paused past its TTL finds, on its first call, that it no longer leads
// and that its leader context is cancelled.
//
// # Fencing
//
// Knowing locally that it leads is not enough for a leader: a paused or partitioned
// process learns late that it lost. Writes that only the leader may make carry the
// condition Guard returns (the leader key still exists with the create revision Token
// returns), and etcd rejects them once the leadership is gone:
//
//	resp, err := cli.Txn(ctx).If(e.Guard()).Then(clientv3.OpPut(k, v)).Commit()
//	// !resp.Succeeded: no longer the leader
//
// # Traps of concurrency.Election that this package avoids
//
//   - Campaign returning success after the session expired (etcd issue #19597): the win is
//     checked in one transaction that also requires the candidate's own key.
//   - Observe never reporting "no leader" (etcd issue #7815): Observe reports "" when the
//     last candidate leaves, resumes a broken watch where it stopped, and lists the keys
//     again after a compaction.
//   - Resign racing with a campaign (etcd issue #11408): creating and deleting the
//     candidate's key is serialised, and a key that cannot be deleted is left to expire by
//     abandoning its session, so a stale key never blocks the election for longer than a TTL.
//
// # Leader-only work
//
// LeaderTask runs a function at the start of each leadership and then every interval while
// the candidate leads, never overlapping itself; HACoordinator runs a primary function while
// it leads and a secondary one otherwise, stopping one before starting the other. Both keep
// the election campaigning while they run, sharing the campaign with any Run of the same
// Election. Their Start blocks until its context ends, like Run and like a manager.Runnable,
// and returns once the function has returned and the candidate has left the election; a
// Start after that runs them again:
//
//	task, err := election.NewLeaderTask(e, cleanup, election.TaskOptions{Interval: time.Minute})
//	go task.Start(ctx) // until ctx ends
package election
