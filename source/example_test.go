package source_test

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A source lists a prefix, then watches it; the handler sees every change once, after the
// cache has it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	cli := c.Client()
	_, _ = cli.Put(ctx, "/jobs/build", "queued")

	src, err := source.New(cli, "/jobs/", source.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	events := make(chan source.Event, 10)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // the source's goroutine; ends when runCtx does
		defer close(done)
		_ = src.Run(runCtx, func(e source.Event) { events <- e })
	}()
	_ = src.WaitForSync(ctx)
	_, _ = cli.Put(ctx, "/jobs/build", "running")

	for i := 0; i < 2; i++ {
		e := <-events
		fmt.Println(e.Type, e.Key, string(e.KV.Value), "initial:", e.Initial)
	}
	kv, _ := src.Get("/jobs/build")
	fmt.Println("cached:", string(kv.Value))
	stop()
	<-done
	// Output:
	// PUT /jobs/build queued initial: true
	// PUT /jobs/build running initial: false
	// cached: running
}
