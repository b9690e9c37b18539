// Package rangecheck checks a range-sharded manager's history, read back from etcd from
// revision 1: that no two owned slices ever overlapped (a key two members could have
// reconciled at once), and that every output write was made by a member that owned, at
// that revision, the slice of the key it wrote. Specs of the manager and of the process
// suites share it.
package rangecheck
