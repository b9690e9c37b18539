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
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand: what its argument names, and what it does with a client.
type command struct {
	name, arg, summary string
	run                func(ctx context.Context, e *env) error
}

var commands = []command{
	{"status", "NAME", "a manager's members, leader and shard map", runStatus},
	{"locks", "PREFIX", "the locks under PREFIX: holders, fencing tokens, waiters", runLocks},
	{"elections", "PREFIX", "the elections under PREFIX: leader, token, candidates", runElections},
	{"services", "PREFIX", "the discovery instances under PREFIX", runServices},
}

func findCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// env is what a command works with.
type env struct {
	cli    *clientv3.Client
	opts   options
	arg    string // the command's argument: a manager name or a prefix
	stdout io.Writer
	stderr io.Writer
}

// warn writes a note for the operator to stderr, never to stdout, which may be JSON.
func (e *env) warn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "etcdkit: "+format+"\n", args...)
}

// usagef reports a mistake on the command line, found by parseArgs: exit code 2.
func usagef(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, cmd, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "etcdkit: %v\nRun 'etcdkit -h' for usage.\n", err)
		return exitUsage
	}
	cc := opts.conn.Config()
	for _, w := range cc.Warnings() {
		fmt.Fprintf(stderr, "etcdkit: warning: %s\n", w)
	}
	// Connect bounds its own checks by the dial timeout.
	cli, err := etcdutil.Connect(ctx, cc)
	if err != nil {
		fmt.Fprintf(stderr, "etcdkit: %v\n", err)
		return exitFailure
	}
	defer func() { _ = cli.Close() }()

	rctx, cancel := context.WithTimeout(ctx, opts.commandTimeout)
	defer cancel()
	e := &env{cli: cli, opts: opts, arg: opts.arg, stdout: stdout, stderr: stderr}
	if err := cmd.run(rctx, e); err != nil {
		fmt.Fprintf(stderr, "etcdkit: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// options are the command line.
type options struct {
	conn           etcdutil.ConnFlags
	commandTimeout time.Duration
	output         string

	// status only
	root          string
	members       bool
	memberTimeout time.Duration

	arg string
}

// statusFlags are the flags that only status takes.
var statusFlags = []string{"root", "members", "member-timeout"}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("etcdkit", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, in one line
	o.conn.Register(fs, "127.0.0.1:2379", "comma-separated etcd endpoints")
	fs.DurationVar(&o.commandTimeout, "command-timeout", 5*time.Second, "how long the reads may take once connected")
	fs.StringVar(&o.output, "o", "table", "output format: table or json")
	fs.StringVar(&o.root, "root", "", "status: the manager's root prefix (default /etcdkit/NAME/)")
	fs.BoolVar(&o.members, "members", false, "status: also ask each member's /debug/shards")
	fs.DurationVar(&o.memberTimeout, "member-timeout", 2*time.Second, "status: how long to wait for each member's /debug/shards")
	return fs
}

// parseArgs reads the command line: flags may come before, between and after the command
// and its argument.
func parseArgs(args []string) (options, command, error) {
	var o options
	fs := newFlagSet(&o)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, command{}, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) == 0 {
		return o, command{}, usagef("no command given: want one of %s", commandNames())
	}
	if pos[0] == "help" {
		return o, command{}, flag.ErrHelp
	}
	cmd, ok := findCommand(pos[0])
	if !ok {
		return o, command{}, usagef("unknown command %q: want one of %s", pos[0], commandNames())
	}
	switch {
	case len(pos) == 1:
		return o, cmd, usagef("%s needs a %s: etcdkit %s %s", cmd.name, cmd.arg, cmd.name, cmd.arg)
	case len(pos) > 2:
		return o, cmd, usagef("%s takes one %s, got %d arguments: %s", cmd.name, cmd.arg, len(pos)-1, strings.Join(pos[1:], " "))
	case pos[1] == "":
		return o, cmd, usagef("%s: %s must not be empty", cmd.name, cmd.arg)
	}
	o.arg = pos[1]
	if cmd.name == "status" {
		root, err := managerRoot(o.arg, o.root)
		if err != nil {
			return o, cmd, err
		}
		o.root = root
	} else {
		var misplaced []string
		fs.Visit(func(f *flag.Flag) {
			for _, n := range statusFlags {
				if f.Name == n {
					misplaced = append(misplaced, "--"+n)
				}
			}
		})
		if len(misplaced) > 0 {
			return o, cmd, usagef("%s applies to the status command only", strings.Join(misplaced, ", "))
		}
	}
	if o.output != "table" && o.output != "json" {
		return o, cmd, usagef("-o must be table or json, got %q", o.output)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--command-timeout", o.commandTimeout}, {"--member-timeout", o.memberTimeout}} {
		if d.v <= 0 {
			return o, cmd, usagef("%s must be positive, got %s", d.flag, d.v)
		}
	}
	if err := o.conn.Check(); err != nil {
		return o, cmd, usagef("%s", err)
	}
	if len(o.conn.Config().Endpoints) == 0 {
		return o, cmd, usagef("--endpoints must name at least one etcd endpoint")
	}
	return o, cmd, nil
}

func commandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "etcdkit shows what etcdkit's components hold in etcd. It only reads.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: etcdkit [flags] COMMAND ARG [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-18s %s\n", c.name+" "+c.arg, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags:")
	var o options
	fs := newFlagSet(&o)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit codes: 0 ok (also when nothing is found under a prefix), 1 failure, 2 usage.")
}
