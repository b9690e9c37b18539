// Command etcd is etcd's own server, built from go.etcd.io/etcd/server/v3/etcdmain at the
// version this module requires. etcdtest runs it for process-level fault tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
