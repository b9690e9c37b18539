// Package config keeps an application's configuration in etcd: typed values, change
// notifications, feature flags and snapshots.
//
// # Values
//
// A Manager owns a key prefix. Set stores any value as JSON at a key relative to it, and
// the typed getters read it back:
//
//	cfg, err := config.NewManager(client, "/config/app", config.Options{Logger: log})
//	defer cfg.Close()
//	err = cfg.Set(ctx, "database/port", 5432)  // /config/app/database/port = 5432
//	port, err := cfg.GetInt(ctx, "database/port")
//
// The getters tell a missing key (ErrNotFound) from a value of another type
// (ErrWrongType) and from bytes that are not JSON (ErrInvalidValue, for values written by
// other tools); every error names the key, and the last two the stored value.
//
// # Cache
//
// The Manager lists its prefix once and follows it with a watch, so reads cost no round
// trip to etcd. A read never returns something older than a write this Manager has
// finished: until the cache has seen the revision of its own latest write, reads go to
// etcd. Writes of other processes show up as soon as the watch delivers them. When the
// watch breaks (a lost leader, a reconnect) it resumes from the last revision the cache
// saw; when etcd compacted that history meanwhile, the Manager lists again and carries on
// from the list's revision. The cache is a source.Source over the prefix.
//
// # Watching
//
// Watch reports each change of a key, or of every key under a prefix ending in "/", with
// its old and new value, from a goroutine of the Manager.
//
// # Feature flags
//
// FeatureFlags keeps flags under "flags/" as rollout percentages: Enable and Disable set
// 100 and 0, SetRollout anything between, and IsEnabledFor decides per subject by a stable
// hash, so a user keeps their answer.
//
// # Snapshots
//
// Snapshots saves the whole configuration under an ID, outside the configuration prefix,
// and restores it in one transaction that fails, changing nothing, if another writer got in
// between or if it needs more operations than etcd allows in one transaction.
package config
