package config

// SetBeforeRestoreCommit makes RestoreSnapshot call fn between reading the configuration
// and committing its transaction, so that a test can write in between.
func SetBeforeRestoreCommit(s *Snapshots, fn func()) { s.beforeCommit = fn }
