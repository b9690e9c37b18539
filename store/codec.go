package store

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Codec turns objects into stored bytes and back.
type Codec[T any] interface {
	Encode(obj *T) ([]byte, error)
	Decode(data []byte, obj *T) error
}

// DefaultCodec is the codec New uses when Options.Codec is nil: String for a Store[string]
// and Bytes for a Store[[]byte], so that what etcdctl writes is read as it is and what the
// store writes reads plainly with etcdctl get; JSON for every other type.
func DefaultCodec[T any]() Codec[T] {
	var zero T
	switch any(zero).(type) {
	case string:
		return any(String{}).(Codec[T])
	case []byte:
		return any(Bytes{}).(Codec[T])
	}
	return JSON[T]{}
}

// JSON stores objects as JSON. It is the default for every type but string and []byte.
type JSON[T any] struct{}

// Encode marshals obj as JSON.
func (JSON[T]) Encode(obj *T) ([]byte, error) { return json.Marshal(obj) }

// Decode unmarshals JSON data into obj.
func (JSON[T]) Decode(data []byte, obj *T) error { return json.Unmarshal(data, obj) }

// String stores a string as its bytes, without quotes: the default of a Store[string]. It
// refuses to decode bytes that are not UTF-8 (use Bytes for those).
type String struct{}

// Encode returns the string's bytes.
func (String) Encode(obj *string) ([]byte, error) { return []byte(*obj), nil }

// Decode sets obj to data, which must be valid UTF-8.
func (String) Decode(data []byte, obj *string) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("store: %d bytes are not UTF-8 text (a Store[[]byte] reads any bytes)", len(data))
	}
	*obj = string(data)
	return nil
}

// Bytes stores a byte slice as it is: the default of a Store[[]byte].
type Bytes struct{}

// Encode returns the bytes. The store does not keep them past the write.
func (Bytes) Encode(obj *[]byte) ([]byte, error) { return *obj, nil }

// Decode sets obj to a copy of data.
func (Bytes) Decode(data []byte, obj *[]byte) error {
	*obj = append([]byte(nil), data...)
	return nil
}
