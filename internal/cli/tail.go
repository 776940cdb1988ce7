package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/di"
	"github.com/nvent/nvent/internal/logging"
	"github.com/nvent/nvent/internal/stream"
)

func tailCmd(load loader, env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "tail PATTERN",
		Short: "Print stream messages whose topic matches PATTERN ('*' matches anything), one JSON line each, until Ctrl-C",
		Long: "Print stream messages whose topic matches PATTERN, such as 'store-sync:append:*' or 'flow:event:run-1',\n" +
			"one JSON line each ({type, topic, data, timestamp, instanceId, eventId}), from the moment tail starts\n" +
			"until Ctrl-C. With NVENT_STREAM=memory it only sees its own process, so it is for the redis backend.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if _, err := stream.CompilePattern(args[0]); err != nil {
				return err
			}
			s, cleanup, err := di.InitializeStream(cmd.Context(), cfg, logging.New(cfg, env.Stderr))
			if err != nil {
				return err
			}
			defer cleanup()
			sub, err := s.NewSubscriber(stream.Broadcast())
			if err != nil {
				return err
			}
			defer sub.Close()
			msgs, err := sub.Subscribe(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stderr, "tailing %s on the %s stream\n", args[0], cfg.Stream)
			enc := json.NewEncoder(cmd.OutOrStdout())
			for msg := range msgs {
				m, err := stream.FromWatermill(msg)
				if err != nil {
					fmt.Fprintf(env.Stderr, "skipping undecodable message %s: %v\n", msg.UUID, err)
					msg.Ack()
					continue
				}
				line, err := json.Marshal(m)
				if err != nil {
					return err
				}
				if id := msg.Metadata.Get(bus.MetadataCorrelationID); id != "" {
					// The contract's shape, plus the correlation id when the
					// change came from a request that had one.
					var withID map[string]json.RawMessage
					_ = json.Unmarshal(line, &withID)
					withID["correlationId"], _ = json.Marshal(id)
					if err := enc.Encode(withID); err != nil {
						return err
					}
					msg.Ack()
					continue
				}
				if err := enc.Encode(json.RawMessage(line)); err != nil {
					return err
				}
				msg.Ack()
			}
			return nil
		},
	}
}
