// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3/etcdmain) at the version
// this module's Kubernetes requires; upstream's own main package lives in a module that is not
// published, so this three-line main stands in for it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
