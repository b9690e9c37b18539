package etcdutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"unicode"
)

// ValidID reports whether id may name a replica or a candidate: it goes into keys and
// values, so it holds no '/' and no white space.
func ValidID(id string) bool {
	return !strings.ContainsFunc(id, func(r rune) bool { return r == '/' || unicode.IsSpace(r) })
}

// DefaultID is the ID of a process that was given none: the host name (fallback when the
// host has none that is a valid ID) and a random suffix, so that processes on one host
// differ.
func DefaultID(fallback string) string {
	host, err := os.Hostname()
	if err != nil || host == "" || !ValidID(host) {
		host = fallback
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
