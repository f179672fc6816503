package ice

// DroppedSTUN returns how many malformed STUN messages t's guard dropped.
func DroppedSTUN(t *Transport) uint64 { return t.dropped.Load() }
