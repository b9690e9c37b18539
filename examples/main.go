package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Exit codes: 1 when an example or the connection fails, 2 for a usage error.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// flags are the runner's command line: the guide's flags plus etcdctl's connection flags.
type flags struct {
	example string
	nodeID  string
	conn    etcdutil.ConnFlags
	verbose bool
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("examples", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.example, "example", "all", "which example to run: all, "+strings.Join(exampleNames(), ", "))
	fs.StringVar(&f.nodeID, "node-id", defaultNodeID(), "this node's id, for the election and ha examples")
	f.conn.Register(fs, "", "comma-separated etcd endpoints; empty starts an embedded etcd in a temporary directory")
	fs.BoolVar(&f.verbose, "v", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return f, f.conn.Check()
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Examples tell their story from several goroutines (the nodes of a demo).
	stdout = &lockedWriter{w: stdout}
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "examples: %v\n", err)
		return exitUsage
	}
	selected, err := selectExamples(f.example)
	if err != nil {
		fmt.Fprintf(stderr, "examples: %v\n", err)
		return exitUsage
	}
	log := newLogger(stderr, f.verbose)

	client, newClient, cleanup, err := connect(ctx, f, stdout, stderr, log)
	if err != nil {
		fmt.Fprintf(stderr, "examples: %v\n", err)
		return exitFailure
	}
	defer cleanup()

	runID := fmt.Sprintf("%d", time.Now().UnixNano())
	for _, ex := range selected {
		where := "guide section " + ex.section
		if ex.section == "" {
			where = "beyond the guide"
		}
		fmt.Fprintf(stdout, "\n=== %s: %s (%s)\n", ex.name, ex.summary, where)
		e := &env{
			client:    client,
			newClient: newClient,
			log:       log.WithName(ex.name),
			out:       stdout,
			nodeID:    f.nodeID,
			prefix:    "/etcdkit-examples/" + runID + "/" + ex.name + "/",
			all:       f.example == "all",
		}
		err := ex.run(ctx, e)
		e.cleanup()
		if err != nil {
			fmt.Fprintf(stderr, "examples: %s: %v\n", ex.name, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "--- %s: ok\n", ex.name)
	}
	return 0
}

// connect reaches the etcd of the flags, or starts an embedded one when no endpoint is given.
// It returns a client, a way to make more clients like it (each example process of a
// multi-node demo has its own), and a cleanup that closes the client and stops the
// embedded etcd. What is unsafe in the flags (a password in plain text) goes to stderr.
func connect(ctx context.Context, f flags, stdout, stderr io.Writer, log logr.Logger) (*clientv3.Client, func() (*clientv3.Client, error), func(), error) {
	if f.conn.Endpoints == "" {
		fmt.Fprintln(stdout, "starting an embedded etcd in a temporary directory (give --endpoints to use your own)")
		c, err := etcdtest.Start(ctx)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("embedded etcd: %w", err)
		}
		log.V(1).Info("embedded etcd ready", "endpoints", c.Endpoints())
		return c.Client(), c.NewClient, func() { _ = c.Close() }, nil
	}
	cc := f.conn.Config()
	for _, w := range cc.Warnings() {
		fmt.Fprintf(stderr, "examples: warning: %s\n", w)
	}
	client, err := etcdutil.Connect(ctx, cc)
	if err != nil {
		return nil, nil, nil, err
	}
	log.V(1).Info("connected", "endpoints", cc.Endpoints)
	newClient := func() (*clientv3.Client, error) { return etcdutil.Connect(ctx, cc) }
	return client, newClient, func() { _ = client.Close() }, nil
}

// newLogger logs through zap's console encoder, without stack traces: the story is what
// a reader follows, the log says what the library did.
func newLogger(w io.Writer, verbose bool) logr.Logger {
	level := zapcore.InfoLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.TimeKey = ""
	enc.CallerKey = ""
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level)
	return zapr.NewLogger(zap.New(core))
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// env is what an example gets: a client, a logger, where to tell its story, and a key
// prefix of its own that is deleted when it ends.
type env struct {
	client *clientv3.Client
	// newClient makes another client of the same etcd with the same credentials; the
	// example closes it. Multi-node demos give each node its own.
	newClient func() (*clientv3.Client, error)
	log       logr.Logger
	out       io.Writer
	nodeID    string
	prefix    string
	all       bool // part of --example=all: interactive examples run a short in-process demo
}

// say prints one line of the example's story.
func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.out, "  "+format+"\n", args...)
}

// key returns a key under the example's own prefix.
func (e *env) key(name string) string { return e.prefix + name }

// rel returns a key of the example without its prefix, for the story.
func (e *env) rel(key string) string { return strings.TrimPrefix(key, e.prefix) }

// cleanup deletes every key the example wrote under its prefix.
func (e *env) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.client.Delete(ctx, e.prefix, clientv3.WithPrefix()); err != nil {
		e.log.Error(err, "cleaning up the example's keys", "prefix", e.prefix)
	}
}

// expect returns an error naming what was checked when ok is false.
func expect(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf("unexpected outcome: "+format, args...)
}
