// Package stunturn runs a STUN and TURN server in the process, on
// loopback by default, for tests and examples: a stand-in for a coturn
// that needs no installation. It wraps pion/turn/v3's server.
//
// # Security
//
// The server relays for anyone who holds its credentials. Its default
// credentials are random per server, and it listens on 127.0.0.1 unless
// told otherwise; relayed allocations are restricted to loopback peers by
// default, so it cannot be used to reach other hosts.
//
// # Concurrency
//
// A Server's methods may be called from any goroutine. Close stops every
// goroutine the server started.
package stunturn
