package manager

import (
	"errors"
	"testing"
)

func TestReachable(t *testing.T) {
	host := func() (string, error) { return "node-7", nil }
	none := func() (string, error) { return "", errors.New("no host name") }
	for _, tc := range []struct {
		bound string
		name  func() (string, error)
		want  string
	}{
		{"[::]:8081", host, "node-7:8081"},
		{"0.0.0.0:8081", host, "node-7:8081"},
		{":8081", host, "node-7:8081"},
		{"10.0.0.5:8081", host, "10.0.0.5:8081"},
		{"127.0.0.1:0", host, "127.0.0.1:0"},
		{"[::1]:8081", host, "[::1]:8081"},
		{"pod.example:8081", host, "pod.example:8081"},
		{"[::]:8081", none, "[::]:8081"},
		{"", host, ""},
	} {
		if got := reachable(tc.bound, tc.name); got != tc.want {
			t.Errorf("reachable(%q) = %q, want %q", tc.bound, got, tc.want)
		}
	}
}
