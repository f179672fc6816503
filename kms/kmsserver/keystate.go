package kmsserver

// KeyState is the lifecycle state of one key version, after KMIP.
type KeyState int

// Key states. Pre-active, active and deactivated follow from the version's
// times; compromised and destroyed are set by the operator
// ([Server.SetKeyState]) and are final.
const (
	// StatePreActive: created, not yet activated; receivers install it.
	StatePreActive KeyState = iota + 1
	// StateActive: the newest activated version; senders use it.
	StateActive
	// StateDeactivated: superseded or expired; usable for receiving until
	// its expiry, then no longer delivered.
	StateDeactivated
	// StateCompromised: never delivered again.
	StateCompromised
	// StateDestroyed: never delivered again; its material is erased.
	StateDestroyed
)

var keyStateNames = map[KeyState]string{
	StatePreActive:   "pre-active",
	StateActive:      "active",
	StateDeactivated: "deactivated",
	StateCompromised: "compromised",
	StateDestroyed:   "destroyed",
}

// String returns the state's name, for example "pre-active".
func (s KeyState) String() string {
	if n, ok := keyStateNames[s]; ok {
		return n
	}
	return "unknown"
}
