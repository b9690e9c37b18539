//go:build unix

package etcdtest_test

// canPause says whether Pause and Resume work here: they send SIGSTOP and SIGCONT.
const canPause = true
