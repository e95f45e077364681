//go:build tools

// Package tools pins the program this module builds (scripts/engines.py builds it).
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
