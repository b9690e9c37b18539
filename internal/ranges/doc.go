// Package ranges holds the pure functions of range sharding: the slice key of a key, the
// etcd key ranges that hold exactly the keys of a slice of slice-key values, and the slice
// map (contiguous slices [lo, hi) that cover every slice-key value) with its splits and
// merges.
//
// # Slice keys and etcd's key order
//
// A controller watches one or more prefixes; below each, a key's suffix has a slice key,
// by default its first path segment ("x" for both "x" and "x/y"). Slices are ranges of
// slice-key values in byte order, so the keys of one slice key are never cut apart, and
// "/jobs/x" and "/status/x" fall in one slice. But etcd orders keys, not slice keys, and
// '/' is not the smallest byte: "foo" < "foo-0" < "foo/a", so the keys of slice key "foo"
// are not one contiguous etcd range when "foo-0" exists. KeyRanges therefore returns, per
// prefix, the main range [prefix+lo, prefix+hi) with holes cut out and a few ranges added:
// the children "s/..." of a slice key s that is a proper prefix of hi followed by a byte
// below '/' sort after prefix+hi but belong to the slice; those of such a prefix of lo sort
// after prefix+lo but belong to an earlier slice. There is one such s per byte below '/'
// in the bound ("job-12-a" has two), so a slice has a handful of ranges at most.
package ranges
