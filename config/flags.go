package config

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

// FlagPrefix is where feature flags live, relative to the Manager's prefix: flag "new-ui"
// is the value at "flags/new-ui".
const FlagPrefix = "flags/"

// FeatureFlags turns features on and off, for everyone or for a stable share of subjects
// (users, tenants, hosts).
//
// A flag is stored as its rollout percentage, a JSON number from 0 to 100: Enable stores
// 100, Disable 0, SetRollout anything between. A flag is enabled (IsEnabled) when it is on
// for everyone, at 100. IsEnabledFor decides per subject by a stable hash of flag and
// subject, so a subject keeps its answer while the percentage stays, and stays enabled
// when the percentage grows. A flag that was never set is off. The booleans true and
// false are read as 100 and 0.
//
// Flags are read through the Manager's cache.
type FeatureFlags struct {
	mgr *Manager
}

// NewFeatureFlags returns the feature flags kept by mgr.
func NewFeatureFlags(mgr *Manager) (*FeatureFlags, error) {
	if mgr == nil {
		return nil, errors.New("config: feature flags need a Manager, got nil")
	}
	return &FeatureFlags{mgr: mgr}, nil
}

func checkFlag(name string) error {
	if name == "" {
		return errors.New("config: flag name must not be empty")
	}
	if strings.Contains(name, "/") {
		return fmt.Errorf("config: flag name must not contain \"/\", got %q", name)
	}
	return nil
}

// Enable turns the flag on for everyone.
func (f *FeatureFlags) Enable(ctx context.Context, name string) error {
	return f.SetRollout(ctx, name, 100)
}

// Disable turns the flag off for everyone.
func (f *FeatureFlags) Disable(ctx context.Context, name string) error {
	return f.SetRollout(ctx, name, 0)
}

// SetRollout turns the flag on for percent (0 to 100) percent of subjects.
func (f *FeatureFlags) SetRollout(ctx context.Context, name string, percent int) error {
	if err := checkFlag(name); err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("config: flag %q: rollout percent must be between 0 and 100, got %d", name, percent)
	}
	return f.mgr.Set(ctx, FlagPrefix+name, percent)
}

// Rollout returns the flag's rollout percentage (0 when it was never set).
func (f *FeatureFlags) Rollout(ctx context.Context, name string) (int, error) {
	if err := checkFlag(name); err != nil {
		return 0, err
	}
	e, err := f.mgr.lookup(ctx, FlagPrefix+name)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return flagPercent(FlagPrefix+name, e)
}

// flagPercent reads a stored flag.
func flagPercent(key string, e *entry) (int, error) {
	if e.err != nil {
		return 0, e.invalid(key)
	}
	switch v := e.val.(type) {
	case bool:
		if v {
			return 100, nil
		}
		return 0, nil
	case int64:
		if v >= 0 && v <= 100 {
			return int(v), nil
		}
	}
	return 0, e.wrongType(key, "a percentage from 0 to 100 or a boolean", describe(e.val))
}

// IsEnabled reports whether the flag is on for everyone.
func (f *FeatureFlags) IsEnabled(ctx context.Context, name string) (bool, error) {
	p, err := f.Rollout(ctx, name)
	return p == 100, err
}

// IsEnabledFor reports whether the flag is on for subject: always at 100, never at 0, and
// in between for the subjects whose bucket (a stable hash of flag and subject, 0 to 99) is
// below the percentage.
func (f *FeatureFlags) IsEnabledFor(ctx context.Context, name, subject string) (bool, error) {
	if subject == "" {
		return false, fmt.Errorf("config: flag %q: subject must not be empty", name)
	}
	p, err := f.Rollout(ctx, name)
	if err != nil {
		return false, err
	}
	return bucket(name, subject) < p, nil
}

// bucket places a subject in one of 100 buckets, independently for each flag, so that the
// subjects of a 10 % rollout are not the same for every flag.
func bucket(flag, subject string) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(flag))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(subject))
	return int(h.Sum64() % 100)
}

// GetAllFlags returns every flag and whether it is on for everyone. Flags whose stored
// value is not a percentage are left out and named in the error.
func (f *FeatureFlags) GetAllFlags(ctx context.Context) (map[string]bool, error) {
	entries, err := f.mgr.entriesUnder(ctx, FlagPrefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(entries))
	var errs []error
	for key, e := range entries {
		p, err := flagPercent(key, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[strings.TrimPrefix(key, FlagPrefix)] = p == 100
	}
	return out, errors.Join(errs...)
}
