package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors of the Manager's reads and writes, wrapped with the key (and stored value) that
// explains them; test for them with errors.Is.
var (
	// ErrNotFound: no value is stored at the key.
	ErrNotFound = errors.New("key not found")
	// ErrWrongType: the stored value is JSON of another type than the getter's.
	ErrWrongType = errors.New("wrong type")
	// ErrInvalidValue: the stored bytes are not JSON (written by something else than Set).
	ErrInvalidValue = errors.New("stored value is not JSON")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("config: manager closed")
)

// decodeValue decodes a stored value. JSON objects become map[string]any, arrays []any,
// integral numbers that fit int64 become int64, other numbers float64; strings, booleans
// and null decode as encoding/json does. Bytes that are not exactly one JSON value, and
// numbers beyond float64's range, are errors.
func decodeValue(raw []byte) (any, error) {
	if !json.Valid(raw) {
		var v any
		err := json.Unmarshal(raw, &v)
		if err == nil {
			err = errors.New("not a single JSON value")
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v)
}

// convertNumbers replaces the json.Numbers in v by int64 or float64, in place.
func convertNumbers(v any) (any, error) {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		f, err := t.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s is out of range", t)
		}
		return f, nil
	case map[string]any:
		for k, e := range t {
			c, err := convertNumbers(e)
			if err != nil {
				return nil, err
			}
			t[k] = c
		}
		return t, nil
	case []any:
		for i, e := range t {
			c, err := convertNumbers(e)
			if err != nil {
				return nil, err
			}
			t[i] = c
		}
		return t, nil
	default:
		return v, nil
	}
}

// entry is one stored value, decoded for one read: what the caller does with an object or
// array it was given does not change the cache, which keeps the stored bytes.
type entry struct {
	raw    []byte
	val    any   // the decoded value; nil when err is set
	err    error // why raw does not decode
	modRev int64
}

func newEntry(kv *mvccpb.KeyValue) *entry {
	e := &entry{raw: kv.Value, modRev: kv.ModRevision}
	e.val, e.err = decodeValue(kv.Value)
	return e
}

// value returns the decoded value for a caller to keep: objects and arrays are decoded
// again, so that a caller that changes them does not change what others read.
func (e *entry) value() any {
	switch e.val.(type) {
	case map[string]any, []any:
		v, _ := decodeValue(e.raw)
		return v
	}
	return e.val
}

// invalid is the error for a key whose stored bytes do not decode.
func (e *entry) invalid(key string) error {
	return fmt.Errorf("config: %q (revision %d): %w: %v (value %s)", key, e.modRev, ErrInvalidValue, e.err, show(e.raw))
}

// wrongType is the error for a key whose value is not what a getter wants.
func (e *entry) wrongType(key, want, why string) error {
	return fmt.Errorf("config: %q: %w: want %s, stored value %s %s", key, ErrWrongType, want, show(e.raw), why)
}

// show quotes a stored value for an error message, cut to a readable length.
func show(raw []byte) string {
	const limit = 64
	s := string(raw)
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	if json.Valid(raw) && len(raw) <= limit {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// describe names the JSON type of a decoded value, with its article.
func describe(v any) string {
	switch v.(type) {
	case string:
		return "is a string"
	case int64, float64:
		return "is a number"
	case bool:
		return "is a boolean"
	case nil:
		return "is null"
	case map[string]any:
		return "is an object"
	case []any:
		return "is an array"
	default:
		return fmt.Sprintf("is a %T", v)
	}
}

// asString, asInt and asBool convert a decoded value for the typed getters; a non-empty
// reason says why they cannot.
func asString(v any) (string, string) {
	s, ok := v.(string)
	if !ok {
		return "", describe(v)
	}
	return s, ""
}

func asInt(v any) (int, string) {
	switch n := v.(type) {
	case int64:
		if n < math.MinInt || n > math.MaxInt {
			return 0, "is out of range for int"
		}
		return int(n), ""
	case float64:
		if n != math.Trunc(n) {
			return 0, "is not an integer"
		}
		if n < math.MinInt || n >= math.MaxInt {
			return 0, "is out of range for int"
		}
		return int(n), ""
	default:
		return 0, describe(v)
	}
}

func asBool(v any) (bool, string) {
	b, ok := v.(bool)
	if !ok {
		return false, describe(v)
	}
	return b, ""
}

// checkKey rejects keys that Set and the getters cannot use.
func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("config: key must not be empty")
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("config: key must not start with \"/\" (it is relative to the manager's prefix), got %q", key)
	case strings.HasSuffix(key, "/"):
		return fmt.Errorf("config: key must not end with \"/\" (that names a prefix), got %q", key)
	}
	return nil
}
