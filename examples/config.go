package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/etcdkit/etcdkit/config"
)

// runConfig shows the guide's section 3: typed values, a read of the wrong type, watching
// old and new values (also of another process's write), feature flags with a percentage
// rollout, and a snapshot that is created, changed and restored.
func runConfig(ctx context.Context, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prefix := e.key("app")
	cfg, err := config.NewManager(e.client, prefix, config.Options{Logger: e.log})
	if err != nil {
		return err
	}
	defer cfg.Close()
	if err := cfg.WaitForSync(ctx); err != nil {
		return err
	}

	steps := []func(context.Context, *env, *config.Manager) error{configValues, configWatch, configFlags, configSnapshots}
	for _, step := range steps {
		if err := step(ctx, e, cfg); err != nil {
			return err
		}
	}
	return nil
}

// configValues sets and reads typed values, and shows the errors of bad reads.
func configValues(ctx context.Context, e *env, cfg *config.Manager) error {
	values := map[string]any{"database/host": "localhost", "database/port": 5432, "api/timeout": 30, "feature/enabled": true}
	for _, k := range []string{"database/host", "database/port", "api/timeout", "feature/enabled"} {
		if err := cfg.Set(ctx, k, values[k]); err != nil {
			return err
		}
	}
	host, err := cfg.GetString(ctx, "database/host")
	if err != nil {
		return err
	}
	port, err := cfg.GetInt(ctx, "database/port")
	if err != nil {
		return err
	}
	enabled, err := cfg.GetBool(ctx, "feature/enabled")
	if err != nil {
		return err
	}
	e.say("set and read back: database/host=%q database/port=%d feature/enabled=%v", host, port, enabled)
	if err := expect(host == "localhost" && port == 5432 && enabled, "the values just set, got %q %d %v", host, port, enabled); err != nil {
		return err
	}
	db, err := cfg.GetAll(ctx, "database")
	if err != nil {
		return err
	}
	e.say("everything under database: %v", db)
	if err := expect(len(db) == 2, "2 values under database, got %v", db); err != nil {
		return err
	}

	_, err = cfg.GetInt(ctx, "database/host")
	e.say("GetInt of a string: %v", err)
	if err := expect(errors.Is(err, config.ErrWrongType), "a wrong-type error, got %v", err); err != nil {
		return err
	}
	_, err = cfg.GetString(ctx, "database/user")
	e.say("GetString of a missing key: %v", err)
	if err := expect(errors.Is(err, config.ErrNotFound), "a not-found error, got %v", err); err != nil {
		return err
	}
	// Another tool writes a value that is not JSON.
	if _, err := e.client.Put(ctx, cfg.Prefix()+"legacy/host", "db.internal"); err != nil {
		return err
	}
	// That put came from outside this manager: its cache sees it a moment later.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = cfg.GetString(ctx, "legacy/host")
		if !errors.Is(err, config.ErrNotFound) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.say("GetString of bytes that are not JSON: %v", err)
	if err := expect(errors.Is(err, config.ErrInvalidValue), "an invalid-value error, got %v", err); err != nil {
		return err
	}
	return cfg.Delete(ctx, "legacy/host")
}

// configWatch watches api/ while this process and another one change it.
func configWatch(ctx context.Context, e *env, cfg *config.Manager) error {
	changes := make(chan string, 16)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	err := cfg.Watch(wctx, "api/", func(key string, old, new any) {
		changes <- fmt.Sprintf("%s: %v -> %v", key, old, new)
	})
	if err != nil {
		return err
	}
	if err := cfg.Set(ctx, "api/timeout", 60); err != nil {
		return err
	}
	if err := configChange(ctx, e, changes, "api/timeout: 30 -> 60"); err != nil {
		return err
	}

	// Another process (its own client and Manager) changes the value.
	cli, err := e.newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	remote, err := config.NewManager(cli, cfg.Prefix(), config.Options{Logger: e.log.WithName("other-process")})
	if err != nil {
		return err
	}
	defer remote.Close()
	if err := remote.Set(ctx, "api/timeout", 90); err != nil {
		return err
	}
	e.say("another process set api/timeout to 90")
	if err := configChange(ctx, e, changes, "api/timeout: 60 -> 90"); err != nil {
		return err
	}
	timeout, err := cfg.GetInt(ctx, "api/timeout")
	if err != nil {
		return err
	}
	e.say("this process's cache has it too: api/timeout=%d", timeout)
	return expect(timeout == 90, "the cache to follow the other process's write, got %d", timeout)
}

// configChange waits for the next watch callback and checks it.
func configChange(ctx context.Context, e *env, changes <-chan string, want string) error {
	select {
	case got := <-changes:
		e.say("watch: %s", got)
		return expect(got == want, "the change %q, got %q", want, got)
	case <-time.After(5 * time.Second):
		return expect(false, "the change %q within 5s", want)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// configFlags turns features on and rolls one out to a share of users.
func configFlags(ctx context.Context, e *env, cfg *config.Manager) error {
	flags, err := config.NewFeatureFlags(cfg)
	if err != nil {
		return err
	}
	if err := flags.Enable(ctx, "new-ui"); err != nil {
		return err
	}
	if err := flags.Disable(ctx, "beta-search"); err != nil {
		return err
	}
	on, err := flags.IsEnabled(ctx, "new-ui")
	if err != nil {
		return err
	}
	e.say("feature new-ui enabled: %v", on)
	if err := expect(on, "new-ui to be enabled"); err != nil {
		return err
	}

	if err := flags.SetRollout(ctx, "checkout-v2", 25); err != nil {
		return err
	}
	in := 0
	for i := 0; i < 1000; i++ {
		ok, err := flags.IsEnabledFor(ctx, "checkout-v2", fmt.Sprintf("user-%d", i))
		if err != nil {
			return err
		}
		if ok {
			in++
		}
	}
	again, err := flags.IsEnabledFor(ctx, "checkout-v2", "user-42")
	if err != nil {
		return err
	}
	first, err := flags.IsEnabledFor(ctx, "checkout-v2", "user-42")
	if err != nil {
		return err
	}
	e.say("checkout-v2 rolled out to 25%%: on for %d of 1000 users; user-42 gets %v every time", in, first)
	if err := expect(in > 200 && in < 300 && again == first, "about 250 of 1000 users, stable per user; got %d", in); err != nil {
		return err
	}
	all, err := flags.GetAllFlags(ctx)
	if err != nil {
		return err
	}
	e.say("all flags (on for everyone): %v", all)
	return expect(reflect.DeepEqual(all, map[string]bool{"new-ui": true, "beta-search": false, "checkout-v2": false}),
		"three flags, got %v", all)
}

// configSnapshots saves the configuration, changes it, restores it, and shows a restore
// that does not fit in one transaction being refused.
func configSnapshots(ctx context.Context, e *env, cfg *config.Manager) error {
	snaps, err := config.NewSnapshots(cfg)
	if err != nil {
		return err
	}
	before, err := cfg.GetAll(ctx, "")
	if err != nil {
		return err
	}
	info, err := snaps.CreateSnapshot(ctx, "before-tuning")
	if err != nil {
		return err
	}
	e.say("snapshot %q: %d keys at revision %d", info.ID, info.Keys, info.Revision)

	if err := cfg.Set(ctx, "api/timeout", 5); err != nil {
		return err
	}
	if err := cfg.Set(ctx, "api/retries", 10); err != nil {
		return err
	}
	if err := cfg.Delete(ctx, "database/port"); err != nil {
		return err
	}
	e.say("changed api/timeout, added api/retries, deleted database/port")

	small, err := config.NewSnapshots(cfg, config.WithMaxTxnOps(2))
	if err != nil {
		return err
	}
	err = small.RestoreSnapshot(ctx, "before-tuning")
	e.say("restore with at most 2 operations per transaction: %v", err)
	if err := expect(errors.Is(err, config.ErrSnapshotTooLarge), "a too-large error, got %v", err); err != nil {
		return err
	}

	if err := snaps.RestoreSnapshot(ctx, "before-tuning"); err != nil {
		return err
	}
	after, err := cfg.GetAll(ctx, "")
	if err != nil {
		return err
	}
	e.say("restored %q in one transaction: api/timeout=%v, api/retries present: %v, database/port=%v",
		info.ID, after["api/timeout"], after["api/retries"] != nil, after["database/port"])
	if err := expect(reflect.DeepEqual(after, before), "the configuration as saved, got %v, want %v", after, before); err != nil {
		return err
	}
	list, err := snaps.ListSnapshots(ctx)
	if err != nil {
		return err
	}
	if err := expect(len(list) == 1, "one snapshot listed, got %d", len(list)); err != nil {
		return err
	}
	return snaps.DeleteSnapshot(ctx, "before-tuning")
}
