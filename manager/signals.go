package manager

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// SetupSignalHandler returns a context that ends at the first SIGINT or SIGTERM, for main:
//
//	if err := mgr.Start(manager.SetupSignalHandler()); err != nil { ... }
//
// A second signal exits the process at once with code 1. The goroutine that watches the
// signals lives as long as the process.
func SetupSignalHandler() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		os.Exit(1)
	}()
	return ctx
}
