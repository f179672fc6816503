// Package natlab builds a small network of Linux network namespaces with
// real NAT between them, and runs coturn, for tests of ICE through NAT.
//
// The layout follows the project's interop notes (INTEROP.md): two hosts (10.10.1.2 and
// 10.10.2.2), each behind its own router namespace that masquerades its
// LAN onto a public bridge (203.0.113.0/24); the public namespace holds
// coturn on 203.0.113.1. A port-restricted cone NAT is nftables
// "masquerade"; a symmetric NAT is "masquerade fully-random". Routers drop
// unsolicited inbound connections, as home routers do.
//
// Everything needs root, iproute2, nftables and (for coturn) the coturn
// package; Available reports what is missing. A Lab removes its
// namespaces and stops its processes (by PID) on Close.
//
// # Security
//
// Traffic stays inside the namespaces the Lab creates; the public
// namespace has a blackhole default route, so nothing leaves it. coturn
// runs with test credentials and is confined to the Lab.
//
// # Concurrency
//
// A Lab is used from one goroutine; Close may be called once the test
// is done (a second call returns an error wrapping net.ErrClosed).
package natlab
