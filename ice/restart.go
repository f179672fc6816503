package ice

import (
	"time"

	pice "github.com/pion/ice/v3"
)

// This file holds the Transport's side of an ICE restart that is not
// pion's: the gate that tells the old generation's late reports from the
// new one's (agentState), and the restart timer. A restart ends when its
// new pair is selected; one that selects none within DisconnectedTimeout
// plus FailedTimeout (the peer never answered, the application rolled
// the restart back, or the checks found no path) fails the Transport
// with a RestartTimeoutError. On an Endpoint nothing else would: the
// parked Transport's new agent runs no checks until SetRemote.

// beginRestart sets the gate for a Restart and returns the generation the
// restart starts. fresh says a new pion agent replaces the old one (a
// parked Transport): it reports nothing of the old generation. Called
// before pion's agent restarts.
func (t *Transport) beginRestart(fresh bool) uint64 {
	selected := false
	if ag := t.ag(); ag != nil && !fresh {
		pair, err := ag.GetSelectedCandidatePair()
		selected = err == nil && pair != nil
	}
	t.gateMu.Lock()
	defer t.gateMu.Unlock()
	if fresh {
		t.awaitMarker = false
		t.lastState = pice.ConnectionStateNew
	} else {
		// pion's Restart reports Checking unless its agent is New or
		// Checking, which it is not when it last reported one of these
		// states (only a Restart returns to Checking) or has a pair.
		switch t.lastState {
		case pice.ConnectionStateConnected, pice.ConnectionStateCompleted,
			pice.ConnectionStateDisconnected, pice.ConnectionStateFailed:
			t.awaitMarker = true
		}
		t.awaitMarker = t.awaitMarker || selected
	}
	t.endRestartLocked()
	t.restarting = true
	t.answered = false
	t.restartGen = t.gen.Load() + 1
	return t.restartGen
}

// abortRestart undoes beginRestart for a Restart that failed before
// pion's agent restarted.
func (t *Transport) abortRestart() {
	t.gateMu.Lock()
	t.awaitMarker = false
	t.endRestartLocked()
	t.gateMu.Unlock()
}

// endRestartLocked ends the restart in progress, if any, and disarms its
// timer. t.gateMu is held.
func (t *Transport) endRestartLocked() {
	t.restarting = false
	if t.stopTimer != nil {
		t.stopTimer()
		t.stopTimer = nil
	}
}

// restartTimeout is how long a restart may take to select a pair: as
// long as a selected path may stay silent before it has failed.
func (t *Transport) restartTimeout() time.Duration {
	return t.cfg.DisconnectedTimeout + t.cfg.FailedTimeout
}

// armRestartTimer arms the timer of the restart of generation gen.
func (t *Transport) armRestartTimer(gen uint64) {
	d := t.restartTimeout()
	stop := t.afterFunc(d, func() { t.restartExpired(gen) })
	t.gateMu.Lock()
	defer t.gateMu.Unlock()
	select {
	case <-t.closing:
		stop()
		return
	default:
	}
	if !t.restarting || t.restartGen != gen {
		stop() // it ended (or another began) before the timer was armed
		return
	}
	t.stopTimer = stop
}

// restartExpired runs on the timer's goroutine when the restart of
// generation gen has selected no pair within restartTimeout.
func (t *Transport) restartExpired(gen uint64) {
	t.gateMu.Lock()
	answered := t.answered
	t.gateMu.Unlock()
	t.failRestart(gen, &RestartTimeoutError{Timeout: t.restartTimeout(), Answered: answered})
}

// failRestart fails the Transport with err if the restart of generation
// gen is still in progress.
func (t *Transport) failRestart(gen uint64, err error) {
	t.gateMu.Lock()
	if !t.restarting || t.restartGen != gen {
		t.gateMu.Unlock()
		return // it found a path, or another Restart followed it
	}
	t.restarting = false
	t.stopTimer = nil
	t.gateMu.Unlock()
	t.failedOnce.Do(func() { close(t.failed) })
	t.reports.add(report{gen: gen, kind: reportFailed, err: err})
}

// pathSelected ends the restart of generation gen: a pair is selected.
func (t *Transport) pathSelected(gen uint64) {
	t.gateMu.Lock()
	if t.restarting && t.restartGen == gen {
		t.endRestartLocked()
	}
	t.gateMu.Unlock()
}
