package etcdtest

import (
	"net"
	"strings"
	"sync"
)

// SilentProxy forwards TCP connections to an etcd endpoint and can stop forwarding in
// either direction while it keeps every connection open, as a member that is paused
// (SIGSTOP) would: the client's connection stays ready, and its requests go unanswered.
type SilentProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the copy goroutines

	mu       sync.Mutex
	changed  *sync.Cond // broadcast when the directions or closed change
	toEtcd   bool       // forward the client's requests
	toClient bool       // forward etcd's answers
	closed   bool
	conns    map[net.Conn]struct{}
	answers  int // reads forwarded from etcd to the client
	held     int // reads held back
}

// NewSilentProxy forwards to endpoint (a URL such as http://127.0.0.1:2379) in both
// directions until told otherwise. The caller closes it.
func NewSilentProxy(endpoint string) (*SilentProxy, error) {
	target := strings.TrimPrefix(endpoint, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &SilentProxy{ln: ln, target: target, toEtcd: true, toClient: true, conns: map[net.Conn]struct{}{}}
	p.changed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	// The accept loop ends when Close closes the listener.
	go p.accept()
	return p, nil
}

// Endpoint is the proxy's URL.
func (p *SilentProxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Forward sets what the proxy forwards: the client's requests, etcd's answers.
func (p *SilentProxy) Forward(toEtcd, toClient bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.toEtcd, p.toClient = toEtcd, toClient
	p.changed.Broadcast()
}

func (p *SilentProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_, _ = in.Close(), out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		// Each copy goroutine ends when either side is closed (by a peer or Close).
		go p.pipe(out, in, func() bool { return p.toEtcd }, nil)
		go p.pipe(in, out, func() bool { return p.toClient }, &p.answers)
	}
}

// pipe copies src to dst, holding what it read while open says no, and counts the reads
// it forwards in *count when count is not nil.
func (p *SilentProxy) pipe(dst, src net.Conn, open func() bool, count *int) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if !open() {
				p.held++
			}
			for !open() && !p.closed {
				p.changed.Wait()
			}
			closed := p.closed
			if count != nil {
				*count++
			}
			p.mu.Unlock()
			if closed {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Counts returns how many reads the proxy forwarded from etcd to the client, and how many
// it held back.
func (p *SilentProxy) Counts() (answers, held int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answers, p.held
}

// Close cuts every connection, stops listening and waits for the proxy's goroutines.
func (p *SilentProxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.changed.Broadcast()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
