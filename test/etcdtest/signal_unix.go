//go:build unix

package etcdtest

import (
	"os"
	"syscall"
)

// stopSignal is what a graceful stop of a process member sends: etcd shuts down cleanly on
// SIGTERM.
var stopSignal os.Signal = syscall.SIGTERM

// pauseSignal is what Pause (SIGSTOP) and Resume (SIGCONT) send to a process member.
func pauseSignal(pause bool) (os.Signal, error) {
	if pause {
		return syscall.SIGSTOP, nil
	}
	return syscall.SIGCONT, nil
}
