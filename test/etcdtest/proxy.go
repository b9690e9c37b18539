package etcdtest

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
)

// Proxy forwards TCP connections to an etcd endpoint and can cut them: a client connected
// through it loses etcd while the proxy is blocked, as in a network partition, while etcd
// itself runs on.
type Proxy struct {
	ln     net.Listener
	target string
	scheme string
	wg     sync.WaitGroup // the accept loop and the copy goroutines

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
}

// NewProxy forwards to endpoint (a URL such as http://127.0.0.1:2379). The caller closes it.
func NewProxy(endpoint string) (*Proxy, error) {
	scheme, target, ok := strings.Cut(endpoint, "://")
	if !ok {
		return nil, errors.New("etcdtest: proxy endpoint must be a URL such as http://127.0.0.1:2379, got " + endpoint)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, scheme: scheme, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	// The accept loop belongs to the proxy and ends when Close closes the listener.
	go p.accept()
	return p, nil
}

// Endpoint is the proxy's URL, for a client's endpoints.
func (p *Proxy) Endpoint() string { return p.scheme + "://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			_ = in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.wg.Add(2)
		// Each copy goroutine ends when either side is closed (by a peer, Block or Close).
		go p.pipe(in, out)
		go p.pipe(out, in)
		p.mu.Unlock()
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Block cuts every connection and refuses new ones until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Unblock accepts connections again.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
}

// Close cuts every connection, stops listening and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Block()
	p.wg.Wait()
}
