//go:build !unix

package etcdtest

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// stopSignal is what a graceful stop of a process member sends. Outside unix a process can
// only be killed (os.Process.Signal supports os.Kill alone), so Stop and Restart end the
// member as Kill does; its data stays, and Restart starts it again from it.
var stopSignal = os.Kill

// pauseSignal refuses: pausing a process and continuing it needs SIGSTOP and SIGCONT,
// which only unix has. The error wraps errors.ErrUnsupported.
func pauseSignal(pause bool) (os.Signal, error) {
	if pause {
		return nil, fmt.Errorf("etcdtest: Pause needs SIGSTOP, which %s does not have: %w", runtime.GOOS, errors.ErrUnsupported)
	}
	return nil, fmt.Errorf("etcdtest: Resume needs SIGCONT, which %s does not have: %w", runtime.GOOS, errors.ErrUnsupported)
}
