// Package sharding is a manager replica's part in the sharding protocol of the manager
// package: the member's registration on its lease, the claims, drains and releases of the
// shards assigned to it, the gate that admits a sharded controller's keys and fences their
// writes, the leader's assignment, and the member's status. It depends on no Manager: a
// replica gives it what it needs (Deps), and the ownership decisions are a pure function
// (decide) tested on their own.
package sharding
