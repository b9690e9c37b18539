package store

import "encoding/json"

// Codec turns objects into stored bytes and back.
type Codec[T any] interface {
	Encode(obj *T) ([]byte, error)
	Decode(data []byte, obj *T) error
}

// JSON is the default codec.
type JSON[T any] struct{}

// Encode marshals obj as JSON.
func (JSON[T]) Encode(obj *T) ([]byte, error) { return json.Marshal(obj) }

// Decode unmarshals JSON data into obj.
func (JSON[T]) Decode(data []byte, obj *T) error { return json.Unmarshal(data, obj) }
