// Command argocd runs the Argo CD components this repository needs, from Argo CD's own
// `cmd/argocd-*/commands` packages at the version go.mod pins: the application controller, the
// repo server and the ApplicationSet controller, plus the git credential helper the repo server
// hands to git (GIT_ASKPASS=argocd with ARGOCD_BINARY_NAME=argocd-git-ask-pass). Upstream's own
// main also links the API server, its UI and the CLI; nothing here needs them, so this main
// leaves them out (a smaller, faster build).
//
// Multi-call, like upstream's image: the component is ARGOCD_BINARY_NAME, else the program's
// name (a link named argocd-repo-server), else the first argument (`argocd repo-server ...`).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	applicationset "github.com/argoproj/argo-cd/v3/cmd/argocd-applicationset-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/log"
)

var components = map[string]func() *cobra.Command{
	"application-controller":    appcontroller.NewCommand,
	"repo-server":               reposerver.NewCommand,
	"applicationset-controller": applicationset.NewCommand,
	"git-ask-pass":              gitaskpass.NewCommand,
	"version":                   newVersionCommand,
}

// newVersionCommand prints the version stamped at link time, as `argocd version --client` does.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the Argo CD version of this build",
		Run: func(*cobra.Command, []string) {
			fmt.Println(common.GetVersion().Version)
		},
	}
}

func init() {
	// as upstream's main: klog (client-go's logger) follows Argo CD's log level and format
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

func main() {
	name := os.Getenv("ARGOCD_BINARY_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	args := os.Args[1:]
	if _, known := components[strings.TrimPrefix(name, "argocd-")]; !known && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	newCommand, known := components[strings.TrimPrefix(name, "argocd-")]
	if !known {
		names := make([]string, 0, len(components))
		for component := range components {
			names = append(names, component)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: argocd {%s} [flags]\n", strings.Join(names, "|"))
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(args)
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
