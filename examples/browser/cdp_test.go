package main

// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe:
// Chromium reads commands on its fd 3 and writes replies and events on its
// fd 4, each message a JSON object ended by a NUL byte. Enough for a test
// to find the page, evaluate JavaScript in it, open and close tabs, and
// take a screenshot, with no dependency.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    any             `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// cdp is one DevTools connection to a browser.
type cdp struct {
	w    io.WriteCloser // the browser's fd 3
	r    io.ReadCloser  // the browser's fd 4
	done chan struct{}  // closed when the reader has stopped

	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMessage
	err     error // why the reader stopped
}

// newCDPPipes returns the two files to pass to the browser as its fd 3
// and fd 4 (cmd.ExtraFiles), and the client on the other ends. After the
// browser has started, call started to close the parent's copies of the
// browser's ends, so that the client sees EOF when the browser exits.
func newCDPPipes() (browserFiles []*os.File, c *cdp, started func(), err error) {
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		cmdR.Close()
		cmdW.Close()
		return nil, nil, nil, err
	}
	c = &cdp{w: cmdW, r: evR, done: make(chan struct{}), pending: map[int]chan cdpMessage{}}
	started = func() {
		cmdR.Close()
		evW.Close()
		go c.read()
	}
	return []*os.File{cmdR, evW}, c, started, nil
}

func (c *cdp) read() {
	defer close(c.done)
	br := bufio.NewReader(c.r)
	var err error
	for {
		var msg []byte
		msg, err = br.ReadBytes(0)
		if err != nil {
			break
		}
		var m cdpMessage
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue // an event: this client waits on replies only
		}
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("devtools pipe closed: %w", err)
	c.pending = nil
	c.mu.Unlock()
}

// close closes the client's ends of the pipes and waits for its reader.
func (c *cdp) close() {
	c.w.Close()
	c.r.Close()
	<-c.done
}

// call sends method with params within session (empty for the browser
// itself) and decodes the reply's result into result, if not nil.
func (c *cdp) call(ctx context.Context, session, method string, params, result any) error {
	c.mu.Lock()
	if c.pending == nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan cdpMessage, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	msg, err := json.Marshal(cdpMessage{ID: id, Method: method, SessionID: session, Params: params})
	if err != nil {
		return err
	}
	if _, err := c.w.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("devtools %s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-c.done:
		return fmt.Errorf("devtools %s: %w", method, c.err)
	case <-ctx.Done():
		return fmt.Errorf("devtools %s: %w", method, ctx.Err())
	}
}

// tab is one page target the client is attached to.
type tab struct {
	c        *cdp
	targetID string
	session  string
}

// pageTab attaches to the page target whose URL is url, waiting for it to
// exist.
func (c *cdp) pageTab(ctx context.Context, url string) (*tab, error) {
	for {
		var targets struct {
			TargetInfos []struct {
				TargetID string `json:"targetId"`
				Type     string `json:"type"`
				URL      string `json:"url"`
			} `json:"targetInfos"`
		}
		if err := c.call(ctx, "", "Target.getTargets", nil, &targets); err != nil {
			return nil, err
		}
		for _, ti := range targets.TargetInfos {
			if ti.Type == "page" && ti.URL == url {
				return c.attach(ctx, ti.TargetID)
			}
		}
		if err := sleep(ctx, 100); err != nil {
			return nil, fmt.Errorf("no page at %s: %w", url, err)
		}
	}
}

// newTab opens url in a new tab and attaches to it.
func (c *cdp) newTab(ctx context.Context, url string) (*tab, error) {
	var created struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": url}, &created); err != nil {
		return nil, err
	}
	return c.attach(ctx, created.TargetID)
}

func (c *cdp) attach(ctx context.Context, targetID string) (*tab, error) {
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": targetID, "flatten": true}, &attached); err != nil {
		return nil, err
	}
	return &tab{c: c, targetID: targetID, session: attached.SessionID}, nil
}

// close closes the tab, as a user closing it would.
func (tb *tab) close(ctx context.Context) error {
	return tb.c.call(ctx, "", "Target.closeTarget", map[string]any{"targetId": tb.targetID}, nil)
}

// eval evaluates the JavaScript expression in the tab, awaiting a promise,
// and decodes its value into result, if not nil.
func (tb *tab) eval(ctx context.Context, expr string, result any) error {
	var reply struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := tb.c.call(ctx, tb.session, "Runtime.evaluate",
		map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &reply)
	if err != nil {
		return err
	}
	if e := reply.ExceptionDetails; e != nil {
		return fmt.Errorf("%s: %s %s", expr, e.Text, e.Exception.Description)
	}
	if result == nil || len(reply.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(reply.Result.Value, result)
}

// screenshot returns a PNG of the tab's viewport.
func (tb *tab) screenshot(ctx context.Context) ([]byte, error) {
	// The whole page at a fixed size, whatever the headless window's.
	metrics := map[string]any{"width": 980, "height": 720, "deviceScaleFactor": 1, "mobile": false}
	if err := tb.c.call(ctx, tb.session, "Emulation.setDeviceMetricsOverride", metrics, nil); err != nil {
		return nil, err
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := tb.c.call(ctx, tb.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return nil, err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err == nil && len(png) == 0 {
		err = errors.New("empty screenshot")
	}
	return png, err
}
