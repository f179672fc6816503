package securecall

import (
	"sync"
	"time"
)

// silenceWatch reports media silence (Config.Media.SilenceTimeout): it
// looks at the count of authenticated packets a few times per timeout, on
// a timer that exists only when the report is configured.
type silenceWatch struct {
	mu         sync.Mutex
	c          *Call
	timer      *time.Timer
	stopped    bool
	last       uint64    // authenticated packets at the last look
	quietSince time.Time // when that count last changed
	silent     bool
}

// silenceCheckDivisor is how many looks a silence timeout spans.
const silenceCheckDivisor = 4

func (w *silenceWatch) interval() time.Duration {
	return max(w.c.cfg.Media.SilenceTimeout/silenceCheckDivisor, 10*time.Millisecond)
}

// start begins watching a connected call, if the report is configured.
func (w *silenceWatch) start(c *Call) {
	if c.cfg.Media.SilenceTimeout <= 0 || c.cfg.Media.OnSilence == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.timer != nil {
		return
	}
	w.c = c
	w.quietSince = time.Now()
	w.timer = time.AfterFunc(w.interval(), w.check)
}

func (w *silenceWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	n := w.c.Stats().PacketsAuthenticated
	now := time.Now()
	switch {
	case n != w.last:
		w.last, w.quietSince = n, now
		if w.silent {
			w.silent = false
			w.c.cfg.Media.OnSilence(false)
		}
	case !w.silent && now.Sub(w.quietSince) >= w.c.cfg.Media.SilenceTimeout:
		w.silent = true
		w.c.cfg.Media.OnSilence(true)
	}
	w.timer.Reset(w.interval())
}

// stop ends the watch and waits for a report under way.
func (w *silenceWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
}
