package lock

import (
	"errors"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Manager hands out named locks under one key prefix that all share one session (one
// lease and its keep-alive), however many there are. The locks stay independent of each
// other: holding one says nothing about another. If the shared session ends, every lock
// held on it is lost and the next Lock of any of them starts a new session.
type Manager struct {
	client   *clientv3.Client
	prefix   string
	log      logr.Logger
	sessions *sessions

	mu     sync.Mutex
	locks  map[string]*Lock // by name; guarded by mu
	closed bool             // guarded by mu
}

// NewManager returns a manager of locks named under prefix, whose shared session and logs
// opts configures as New's. The lock called name has the key prefix + "/" + name (no
// second slash when prefix ends with one). It does not talk to etcd until a lock is used.
func NewManager(client *clientv3.Client, prefix string, opts Options) (*Manager, error) {
	if client == nil {
		return nil, errors.New("lock: client must not be nil")
	}
	if prefix == "" {
		return nil, errors.New("lock: prefix must not be empty")
	}
	ttl, err := opts.ttlSeconds()
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Manager{
		client:   client,
		prefix:   prefix,
		log:      opts.Logger,
		sessions: newSessions(client, ttl, opts.Logger.WithValues("lockPrefix", prefix)),
		locks:    map[string]*Lock{},
	}, nil
}

// Get returns the lock called name, the same *Lock for the same name until that lock is
// closed; after its Close, Get makes a new one.
func (m *Manager) Get(name string) (*Lock, error) {
	if name == "" {
		return nil, errors.New("lock: name must not be empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if l, ok := m.locks[name]; ok {
		return l, nil
	}
	key := m.prefix + name
	l := newLock(m.client, key, m.sessions, false, m.log.WithValues("lock", key))
	l.onClose = func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.locks[name] == l {
			delete(m.locks, name)
		}
	}
	m.locks[name] = l
	return l, nil
}

// Close closes every lock of the manager (releasing those held) and revokes the session.
// Get fails with ErrClosed afterwards. Close may be called more than once.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	locks := m.locks
	m.locks = map[string]*Lock{}
	m.mu.Unlock()
	var err error
	for _, l := range locks {
		err = errors.Join(err, l.Close())
	}
	return errors.Join(err, m.sessions.close())
}
