//go:build tools

// Package tools pins the programs this module builds (scripts/engines.py builds them).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
