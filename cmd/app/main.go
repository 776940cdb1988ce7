// Command nvent runs the nvent service and its tools. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nvent/nvent/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // the first signal starts a graceful stop; a second one ends the process at once
	}()
	code := cli.Run(ctx, os.Args[1:], cli.OSEnv())
	stop()
	os.Exit(code)
}
