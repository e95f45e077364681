//go:build tools

// Package tools pins the program this module builds (scripts/engines.py builds it).
package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
