package media

// Hooks for the external tests (package media_test), which may import
// packages that import media, such as kms.

// MemPair is memPair: an in-memory packet link.
func MemPair() (*memConn, *memConn) { return memPair() }

// Inject delivers d to c as if the peer had sent it.
func (c *memConn) Inject(d []byte) { c.inject(d) }

// SetTap makes f see every packet written to c; false drops it.
func (c *memConn) SetTap(f func([]byte) bool) { c.setTap(f) }

// HasRecvKey reports whether s can receive under version v.
func HasRecvKey(s *Session, v uint32) bool { return hasRecvKey(s, v) }
