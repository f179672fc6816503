package kmsserver

// ServerBuckets exposes the buckets the server writes, for the conformance
// suite's list.
var ServerBuckets = buckets
