// Package etcdtest starts real etcd for tests and examples: in-process through etcd's embed
// package for speed, or as separate OS processes of a real etcd binary for faults that need a
// process (kill -9, SIGSTOP, restart). It plays the role that envtest plays for
// controller-runtime: users' own tests of controllers built on etcdkit use it too.
//
// # In-process
//
//	c, err := etcdtest.Start(ctx)                        // one member, loopback ports, temp dir
//	c, err := etcdtest.Start(ctx, etcdtest.WithMembers(3), etcdtest.WithTLS(), etcdtest.WithAuth("s3cret"))
//	defer c.Close()
//	cli := c.Client()                                    // ready client with the cluster's credentials
//
// In a test, New(t) does the same and closes the cluster when the test ends.
//
// # As processes
//
// StartProcesses runs each member as its own etcd process. The binary is built from
// go.etcd.io/etcd/server/v3/etcdmain at the version the calling module requires (see
// EtcdBinary; nothing is downloaded) and cached between runs. Such a cluster can Kill, Pause,
// Resume and Restart a member, and report which member leads. Pause and Resume send SIGSTOP
// and SIGCONT, so they work on unix only: on windows they return an error that names the
// platform (wrapping errors.ErrUnsupported), and a graceful Stop there kills the process.
//
// Every member listens on free loopback ports, keeps its data in a temporary directory that
// Close removes, and runs with fsync off: this etcd is for tests, not for data.
package etcdtest
