// Command etcd is upstream etcd, built from the pinned go.etcd.io/etcd/server/v3.
// The etcd root module uses local replaces, so it cannot be `go install`ed directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
