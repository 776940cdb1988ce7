package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/nvent/nvent/internal/config"
	"github.com/nvent/nvent/internal/di"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/logging"
)

type loader func() (config.Config, error)

func serveCmd(load loader, env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API, the router and its wirings until SIGINT/SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			log := logging.New(cfg, env.Stderr)
			log.Info("nvent starting", "store", cfg.Store, "stream", cfg.Stream,
				"store_sync", cfg.StoreSync, "flow_events", cfg.FlowEvents, "client_messages", cfg.ClientMessages)
			app, cleanup, err := di.InitializeApp(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer cleanup()
			return app.Run(cmd.Context(), nil)
		},
	}
}

func migrateCmd(load loader, env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:       "migrate up|down|status",
		Short:     "Apply (up), roll back one (down) or list (status) the Postgres migrations",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"up", "down", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if cfg.PostgresURL == "" {
				return fmt.Errorf("migrate needs postgres_url (NVENT_POSTGRES_URL)")
			}
			m, cleanup, err := di.InitializeMigrator(cmd.Context(), cfg, logging.New(cfg, env.Stderr))
			if err != nil {
				return err
			}
			defer cleanup()
			out := cmd.OutOrStdout()
			switch args[0] {
			case "up":
				applied, err := m.Up(cmd.Context())
				for _, v := range applied {
					fmt.Fprintf(out, "applied %s\n", v.Name)
				}
				if err == nil && len(applied) == 0 {
					fmt.Fprintln(out, "nothing to apply: the schema is up to date")
				}
				return err
			case "down":
				v, err := m.Down(cmd.Context())
				if err == nil {
					fmt.Fprintf(out, "rolled back %s\n", v.Name)
				}
				return err
			case "status":
				st, err := m.Status(cmd.Context())
				for _, s := range st {
					if s.Applied {
						fmt.Fprintf(out, "applied  %s  %s\n", domain.FormatTime(s.AppliedAt), s.Name)
					} else {
						fmt.Fprintf(out, "pending  %-24s  %s\n", "", s.Name)
					}
				}
				return err
			}
			return domain.Errorf(domain.CodeInvalidInput, "migrate takes up, down or status, not %q", args[0])
		},
	}
	return cmd
}

func appendCmd(load loader, env Env) *cobra.Command {
	var id string
	var expected int64 = -1
	cmd := &cobra.Command{
		Use:   "append SUBJECT TYPE [JSON]",
		Short: "Append one event through the configured store and print it",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			store, cleanup, err := di.InitializeStore(cmd.Context(), cfg, logging.New(cfg, env.Stderr))
			if err != nil {
				return err
			}
			defer cleanup()
			ev := domain.NewEvent{ID: id, Type: args[1]}
			if len(args) == 3 {
				ev.Data = json.RawMessage(args[2])
			}
			var opts domain.AppendOptions
			if expected >= 0 {
				opts.ExpectedSeq = &expected
			}
			res, err := store.Append(cmd.Context(), args[0], []domain.NewEvent{ev}, opts)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), res.Events[0])
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "event id (idempotency key); made up when empty")
	cmd.Flags().Int64Var(&expected, "expected-seq", -1, "fail with a conflict unless the subject is at this seq")
	return cmd
}

func configCmd(load loader, env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (defaults, file, environment) with secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			r := cfg.Redacted()
			for _, k := range slices.Sorted(maps.Keys(r)) {
				fmt.Fprintf(cmd.OutOrStdout(), "%-22s %-32s %s\n", k, config.EnvName(k), r[k])
			}
			return nil
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a YAML configuration file (with the environment applied) and exit non-zero if it cannot work",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := config.Load(args[0], env.Environ); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
