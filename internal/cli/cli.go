// Package cli holds nvent's commands (serve, migrate, append, config, …).
// Each command loads the configuration and asks the injector in internal/di
// for what it needs; no command builds a dependency by hand.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nvent/nvent/internal/config"
	"github.com/nvent/nvent/internal/domain"
)

// Env is what a command may touch of its process: its streams and
// environment. Tests run commands with their own.
type Env struct {
	Stdout, Stderr io.Writer
	Environ        []string
}

// Run executes the command line args (without the program name) and returns
// the process exit code.
func Run(ctx context.Context, args []string, env Env) int {
	root := newRoot(env)
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(env.Stderr, "nvent:", err)
		var de *domain.Error
		if errors.As(err, &de) && de.Code == domain.CodeInvalidInput {
			return 2
		}
		return 1
	}
	return 0
}

// OSEnv is the Env of the running process.
func OSEnv() Env { return Env{Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ()} }

func newRoot(env Env) *cobra.Command {
	var configPath string
	root := &cobra.Command{
		Use:           "nvent",
		Short:         "An event store and a message stream that work as one",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&configPath, "config", "", "YAML configuration file (NVENT_* variables override it)")
	load := func() (config.Config, error) { return config.Load(configPath, env.Environ) }
	root.AddCommand(
		serveCmd(load, env),
		migrateCmd(load, env),
		appendCmd(load, env),
		configCmd(load, env),
		tailCmd(load, env),
		healthCmd(),
		benchCmd(load, env),
	)
	return root
}

// printJSON writes v as one JSON line, for scripts.
func printJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
