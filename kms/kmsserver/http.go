package kmsserver

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTPServer returns the http.Server to expose the KMS with: the handler,
// [Server.TLSConfig] for cert, and the timeouts of [Config] (read header,
// read, write, idle), so that idle, slow or silent connections do not
// hold file descriptors. A long-poll extends its own write deadline by its
// wait. Serve it on [Server.LimitListener] to bound connections too.
func (s *Server) HTTPServer(cert tls.Certificate) *http.Server {
	return &http.Server{
		Handler:           s,
		TLSConfig:         s.TLSConfig(cert),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
	}
}

const (
	// maxHeaderBytes bounds a request's header: a token, a proof and the
	// usual fields fit in a few KiB.
	maxHeaderBytes = 32 << 10
	// maxStreams bounds the concurrent requests of one HTTP/2 connection
	// (a client with more long-polls opens another connection, within
	// MaxConns and MaxWatchesPerDevice).
	maxStreams = 128
)

// LimitListener returns ln accepting at most [Config].MaxConns connections
// at once: beyond it, Accept waits until one closes (the kernel holds new
// connections in its backlog meanwhile).
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, s.cfg.MaxConns), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// extendWrite gives a long-poll's response its own write deadline: the
// server's WriteTimeout counts from the end of the request's header, and a
// long-poll legitimately answers later than that.
func extendWrite(w http.ResponseWriter, wait, writeTimeout time.Duration) {
	if writeTimeout > 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + writeTimeout))
	}
}
