// Command etcd is etcd's own server at v3.6.16, built from go.etcd.io/etcd/server/v3/etcdmain,
// like test/etcdtest/cmd/etcd but at an older minor. make test-compat runs the process-level
// suites against it (mk/compat.mk). This directory is a module of its own, so that it is not
// part of the main module's ./... and can pin its own etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
