package securecall

// This file holds what a started call does with a later description of
// the peer whose o= session id is not the one its descriptions had so far.
// RFC 3264 section 8 says the session id never changes, but B2BUAs and
// border elements that pass on the o= line of whoever is behind them
// change it inside one dialog (after a transfer, say) while the media
// they anchor, and their keys, stay. In kms and hybrid
// keying the session ids name the call's two senders in the key schedule
// (senderID, docs/keyschedule.md), so the call's keys belong to the
// session it started with and such a description is refused with a
// *SessionChangedError. In dtls and sdes keying the session id names no
// key: the call takes the description as the peer's session from then on,
// judged by the same checks as any later description (the DTLS
// fingerprint and SDES keys kept, the codec's clock rate), and counts that
// session's o= versions afresh. call.go calls in here from classifyOffer,
// answerAgain and SetAnswer.

// maxLeftSessions bounds the sessions a call remembers the peer left.
const maxLeftSessions = 4

// leftSession is a session id the peer's descriptions had before they
// changed to another one, with the highest o= version the call took from
// it: a description of it with a version no higher is a late copy.
type leftSession struct{ id, version uint64 }

// otherSessionLocked judges (c.mu held) a later description of the peer,
// for op, whose session id sid is not c.remoteSID and whose o= version is
// version: nil when the call may take it as the peer's session from now
// on; a *SessionChangedError in kms and hybrid keying; a *StateError for
// a late copy of a description of a session the peer left.
func (c *Call) otherSessionLocked(op string, sid, version uint64) error {
	if usesKMS(c.keying) {
		return &SessionChangedError{Op: op, Keying: c.keying, Session: c.remoteSID, Got: sid}
	}
	for _, l := range c.leftSessions {
		if l.id == sid && version <= l.version {
			return &StateError{Op: op, State: c.state,
				Why: "the description is from a session the peer has left, with an o= version no newer than the last the call took from it (a late copy)"}
		}
	}
	return nil
}

// takeSessionLocked makes sid, the session id of the description the call
// is taking, the peer's session (c.mu held), if it is another one: the
// session left is remembered with its last version, and the new one's
// versions count afresh (no offer answered, no answer taken yet).
func (c *Call) takeSessionLocked(sid uint64) {
	if sid == c.remoteSID {
		return
	}
	last := uint64(0)
	if c.lastAnswer != "" {
		last = c.lastOffer
	}
	if c.answerTaken {
		last = max(last, c.lastAnswerVersion)
	}
	left := leftSession{id: c.remoteSID, version: last}
	kept := c.leftSessions[:0]
	for _, l := range c.leftSessions {
		if l.id != sid && l.id != left.id {
			kept = append(kept, l)
		}
	}
	c.leftSessions = append(kept, left)
	if n := len(c.leftSessions); n > maxLeftSessions {
		c.leftSessions = append(c.leftSessions[:0], c.leftSessions[n-maxLeftSessions:]...)
	}
	c.log.Info("securecall: the peer's descriptions changed their o= session id; taken, the keys do not depend on it",
		"keying", string(c.keying))
	c.remoteSID = sid
	c.lastOffer, c.lastAnswer = 0, ""
	c.lastAnswerVersion, c.answerTaken = 0, false
}
