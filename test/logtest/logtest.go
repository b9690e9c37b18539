// Package logtest captures a library's logs in tests, so that a spec can wait for the
// library to say that it noticed something.
package logtest

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// Capture records every log line of the logger New returns.
type Capture struct {
	mu    sync.Mutex
	lines []string
}

// New returns a capture and a logger (verbosity 1) that records into it and also writes
// each line to w (GinkgoWriter, say), when w is not nil.
func New(w io.Writer) (*Capture, logr.Logger) {
	c := &Capture{}
	return c, funcr.New(func(prefix, args string) {
		c.mu.Lock()
		c.lines = append(c.lines, prefix+" "+args)
		c.mu.Unlock()
		if w != nil {
			fmt.Fprintln(w, prefix, args)
		}
	}, funcr.Options{Verbosity: 1})
}

// Contains reports whether any line holds all of the substrings.
func (c *Capture) Contains(subs ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			return true
		}
	}
	return false
}
