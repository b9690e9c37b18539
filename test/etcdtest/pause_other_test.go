//go:build !unix

package etcdtest_test

// canPause says whether Pause and Resume work here: without SIGSTOP they return an error.
const canPause = false
