package config_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/etcdkit/etcdkit/config"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Store typed values and read them back; a read of the wrong type says what is stored.
func Example() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx) // an in-process etcd for the example
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	cfg, err := config.NewManager(etcd.Client(), "/config/app", config.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cfg.Close()
	_ = cfg.Set(ctx, "database/host", "localhost")
	_ = cfg.Set(ctx, "database/port", 5432)
	_ = cfg.Set(ctx, "feature/enabled", true)

	host, _ := cfg.GetString(ctx, "database/host")
	port, _ := cfg.GetInt(ctx, "database/port")
	enabled, _ := cfg.GetBool(ctx, "feature/enabled")
	fmt.Printf("%s:%d enabled=%v\n", host, port, enabled)

	db, _ := cfg.GetAll(ctx, "database")
	fmt.Println(db)

	_, err = cfg.GetInt(ctx, "database/host")
	fmt.Println(errors.Is(err, config.ErrWrongType), err)
	_, err = cfg.GetInt(ctx, "api/timeout")
	fmt.Println(errors.Is(err, config.ErrNotFound), err)
	// Output:
	// localhost:5432 enabled=true
	// map[database/host:localhost database/port:5432]
	// true config: "database/host": wrong type: want int, stored value "localhost" is a string
	// true config: "api/timeout": key not found
}

// Watch a key: every change comes with its old and new value.
func ExampleManager_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	cfg, err := config.NewManager(etcd.Client(), "/config/app", config.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cfg.Close()

	changes := make(chan string, 10)
	err = cfg.Watch(ctx, "api/timeout", func(key string, old, new any) {
		changes <- fmt.Sprintf("%s: %v -> %v", key, old, new)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = cfg.Set(ctx, "api/timeout", 30)
	_ = cfg.Set(ctx, "api/timeout", 60)
	_ = cfg.Delete(ctx, "api/timeout")
	for i := 0; i < 3; i++ {
		fmt.Println(<-changes)
	}
	// Output:
	// api/timeout: <nil> -> 30
	// api/timeout: 30 -> 60
	// api/timeout: 60 -> <nil>
}

// Turn a feature on for everyone, or for a stable share of users.
func ExampleFeatureFlags() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	cfg, err := config.NewManager(etcd.Client(), "/config/app", config.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cfg.Close()
	flags, err := config.NewFeatureFlags(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}

	_ = flags.Enable(ctx, "new-ui")
	on, _ := flags.IsEnabled(ctx, "new-ui")
	fmt.Println("new-ui:", on)

	_ = flags.SetRollout(ctx, "checkout-v2", 25)
	in := 0
	for i := 0; i < 1000; i++ {
		if ok, _ := flags.IsEnabledFor(ctx, "checkout-v2", fmt.Sprintf("user-%d", i)); ok {
			in++
		}
	}
	fmt.Println("checkout-v2 for about a quarter of users:", in > 200 && in < 300)

	all, _ := flags.GetAllFlags(ctx)
	fmt.Println(all)
	// Output:
	// new-ui: true
	// checkout-v2 for about a quarter of users: true
	// map[checkout-v2:false new-ui:true]
}

// Save the configuration, change it, and put it back in one transaction.
func ExampleSnapshots() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	cfg, err := config.NewManager(etcd.Client(), "/config/app", config.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cfg.Close()
	snaps, err := config.NewSnapshots(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}

	_ = cfg.Set(ctx, "api/timeout", 30)
	info, err := snaps.CreateSnapshot(ctx, "before-tuning")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("saved", info.ID, "with", info.Keys, "key")

	_ = cfg.Set(ctx, "api/timeout", 5)
	_ = cfg.Set(ctx, "api/retries", 10)
	if err := snaps.RestoreSnapshot(ctx, "before-tuning"); err != nil {
		fmt.Println(err)
		return
	}
	all, _ := cfg.GetAll(ctx, "")
	fmt.Println("restored:", all)
	// Output:
	// saved before-tuning with 1 key
	// restored: map[api/timeout:30]
}
