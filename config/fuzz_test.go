package config

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeValue feeds arbitrary stored bytes to the decoding that every read goes
// through: it must never panic, must accept exactly the bytes that are one JSON value
// (numbers beyond float64 aside), and the typed conversions must not panic either.
func FuzzDecodeValue(f *testing.F) {
	for _, seed := range []string{
		`"localhost"`, `5432`, `3.5`, `-0`, `1e999`, `9223372036854775808`, `true`, `null`,
		`{"a":[1,2,{"b":null}]}`, `[]`, ``, `localhost`, `"a" "b"`, "\xff", `{"a":1e400}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := decodeValue(raw)
		valid := json.Valid(raw)
		if !valid && err == nil {
			t.Fatalf("decodeValue(%q) accepted bytes that are not JSON: %#v", raw, v)
		}
		if err != nil {
			if valid && !outOfRange(raw) {
				t.Fatalf("decodeValue(%q) rejected valid JSON: %v", raw, err)
			}
			return
		}
		// Whatever decodes, the getters can ask about without panicking.
		_, _ = asString(v)
		_, _ = asInt(v)
		_, _ = asBool(v)
		_ = describe(v)
		// A decoded value encodes again, and decodes to an equal encoding.
		b1, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("decoded %q to %#v, which does not encode: %v", raw, v, err)
		}
		v2, err := decodeValue(b1)
		if err != nil {
			t.Fatalf("re-encoded %q as %q, which does not decode: %v", raw, b1, err)
		}
		b2, _ := json.Marshal(v2)
		if string(b1) != string(b2) && !negativeZero(v) {
			t.Fatalf("%q: encodings differ after a round trip: %q then %q", raw, b1, b2)
		}
	})
}

// outOfRange reports whether raw holds a number that float64 cannot represent.
func outOfRange(raw []byte) bool {
	var v any
	return json.Unmarshal(raw, &v) != nil
}

// negativeZero reports whether v holds -0, which encodes as "-0" and decodes as the
// integer 0.
func negativeZero(v any) bool {
	switch t := v.(type) {
	case float64:
		return t == 0
	case map[string]any:
		for _, e := range t {
			if negativeZero(e) {
				return true
			}
		}
	case []any:
		for _, e := range t {
			if negativeZero(e) {
				return true
			}
		}
	}
	return false
}
