// Package finalizer is the multi-process suite of the finalizer protocol: a controller that
// cleans up through store finalizers runs in processes of its own (the suite's test binary
// started again), so that the cleanup can be interrupted by a kill -9, and a delete can be
// made while every replica is stopped. It runs on unix systems only.
package finalizer
