package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// processes runs each member as an etcd process built by EtcdBinary.
type processes struct{}

// process is one running etcd process. Its wait goroutine (started in start, ended when the
// process exits) records the exit and closes done.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // the exit status; read after done is closed
}

func (processes) start(ctx context.Context, c *Cluster, m *member) error {
	bin, err := EtcdBinary(ctx)
	if err != nil {
		return err
	}
	args := []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", c.initialCluster(),
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "etcdtest",
		"--heartbeat-interval", strconv.Itoa(int(c.opts.tick / time.Millisecond)),
		"--election-timeout", strconv.Itoa(int(c.opts.election / time.Millisecond)),
		"--unsafe-no-fsync",
		"--logger", "zap",
		"--log-level", c.opts.logLevel,
		"--log-outputs", "stderr",
		"--bcrypt-cost", strconv.Itoa(bcryptCost),
	}
	if c.certs != nil {
		args = append(args,
			"--cert-file", c.certs.serverCert,
			"--key-file", c.certs.serverKey,
			"--trusted-ca-file", c.certs.client.CA,
			"--client-cert-auth")
	}
	if ttl := c.opts.simpleTokenTTLSeconds(); ttl > 0 {
		args = append(args, "--auth-token-ttl", strconv.FormatUint(uint64(ttl), 10))
	}
	token, err := c.authTokenFlag()
	if err != nil {
		return err
	}
	if token != "" {
		args = append(args, "--auth-token", token)
	}
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	m.handle = p
	return nil
}

func (processes) stop(m *member, kill bool) error {
	p, ok := m.handle.(*process)
	if !ok {
		return nil
	}
	m.handle = nil
	select {
	case <-p.done:
		return nil // it had exited already
	default:
	}
	sig := stopSignal
	if kill {
		sig = os.Kill
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

func (processes) signal(m *member, pause bool) error {
	p, ok := m.handle.(*process)
	if !ok {
		return fmt.Errorf("etcdtest: member %s does not run", m.name)
	}
	sig, err := pauseSignal(pause)
	if err != nil {
		return err
	}
	return p.cmd.Process.Signal(sig)
}
