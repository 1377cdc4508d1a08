package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newServerCmd is a placeholder until the control plane's command lands.
func newServerCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "Run the control plane",
		RunE:  func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
