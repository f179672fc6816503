// Package interop proves securecall against peers that nobody on the
// securecall team wrote: Chromium's WebRTC stack, pion/webrtc/v4, coturn
// and ffmpeg, on real protocol traffic. It also holds the side-by-side
// comparison benchmarks against pion/webrtc/v4.
//
// It is a nested module so that its peers never enter the dependency graph
// of an application that imports securecall. It has no exported API; its
// content is its tests.
//
// # Running
//
// As root, with the Debian packages chromium, ffmpeg, coturn and iproute2:
//
//	cd internal/interop && SECURECALL_INTEROP=1 go test ./... -v
//
// Every test that needs a tool, root or a network namespace skips with a
// message naming what is missing, unless SECURECALL_INTEROP=1 is set, in
// which case a missing tool is a failure. The comparison benchmarks:
//
//	cd internal/interop && go test -run '^$' -bench Compare -benchmem
//
// # Security
//
// The tests send traffic only to loopback and to network namespaces that
// they create and remove themselves. The SDES test puts a fresh random key
// in an SDP file in a temporary directory, as ffmpeg needs it; no key is
// ever logged.
//
// # Concurrency
//
// Each test starts its own peers (processes by PID, namespaces by name) and
// stops them in its cleanup; tests do not share state.
package interop
