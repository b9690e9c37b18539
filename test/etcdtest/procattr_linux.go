package etcdtest

import "syscall"

// procAttr makes the kernel kill a member when the test process dies, so that no etcd
// outlives a crashed or interrupted test run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
