package discovery

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
)

// Errors returned by the registry and the load balancer. They are wrapped with the names
// that explain them; test for them with errors.Is.
var (
	// ErrClosed is returned by calls on a Registry or LoadBalancer after Close.
	ErrClosed = errors.New("discovery: closed")
	// ErrNoInstances is returned by LoadBalancer.GetService and Acquire when no instance of
	// the service is registered (or every instance is unhealthy).
	ErrNoInstances = errors.New("discovery: no instances")
)

// ServiceInfo describes one instance of a service. It is stored as JSON under
// <prefix>/<Name>/<ID>.
type ServiceInfo struct {
	// Name is the service's name, shared by all its instances. Required, without "/".
	Name string `json:"name"`
	// ID tells this instance from the others of the same service. Required, without "/".
	ID string `json:"id"`
	// Address is the host name or IP address clients connect to. Required.
	Address string `json:"address"`
	// Port is the TCP port clients connect to, 0 to 65535.
	Port int `json:"port"`
	// Metadata holds anything else clients should know (version, region, ...).
	Metadata map[string]string `json:"metadata,omitempty"`
}

// HostPort returns Address and Port joined for net.Dial ("10.0.0.1:8080", "[::1]:8080").
func (s ServiceInfo) HostPort() string {
	return net.JoinHostPort(s.Address, strconv.Itoa(s.Port))
}

func (s ServiceInfo) validate() error {
	if err := checkName("service name", s.Name); err != nil {
		return err
	}
	if err := checkName("instance ID", s.ID); err != nil {
		return err
	}
	if s.Address == "" {
		return fmt.Errorf("discovery: instance %s/%s: address must not be empty", s.Name, s.ID)
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("discovery: instance %s/%s: port must be between 0 and 65535, got %d", s.Name, s.ID, s.Port)
	}
	return nil
}

// equal reports whether two descriptions are the same, so that a rewrite of an unchanged
// instance (a heartbeat's re-registration) is not reported as an update.
func (s ServiceInfo) equal(o ServiceInfo) bool {
	return s.Name == o.Name && s.ID == o.ID && s.Address == o.Address && s.Port == o.Port &&
		maps.Equal(s.Metadata, o.Metadata)
}

// checkName rejects names that cannot be a single segment of a key.
func checkName(what, v string) error {
	if v == "" {
		return fmt.Errorf("discovery: %s must not be empty", what)
	}
	if strings.Contains(v, "/") {
		return fmt.Errorf("discovery: %s must not contain \"/\", got %q", what, v)
	}
	return nil
}

// EventType says what happened to an instance.
type EventType int

// The kinds of ServiceEvent.
const (
	// ServiceAdded: the instance appeared (registered, or healthy again).
	ServiceAdded EventType = iota + 1
	// ServiceRemoved: the instance went away (deregistered, expired, or unhealthy).
	ServiceRemoved
	// ServiceUpdated: the instance's stored description changed.
	ServiceUpdated
)

// String returns "added", "removed" or "updated".
func (t EventType) String() string {
	switch t {
	case ServiceAdded:
		return "added"
	case ServiceRemoved:
		return "removed"
	case ServiceUpdated:
		return "updated"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// ServiceEvent is one change of a watched service. For ServiceRemoved, Service is the
// instance as it was last known.
type ServiceEvent struct {
	Type    EventType
	Service ServiceInfo
}
