// Package shard holds the pure functions of sharding: the shard of a key, and the
// assignment of shards to members that the leader computes.
package shard
