package kmsserver

import (
	"errors"
	"fmt"
	"net"
)

// ErrNoCall: no call has the id an operator method was given.
var ErrNoCall = errors.New("kmsserver: no such call")

var errServerClosed = fmt.Errorf("kmsserver: server: %w", net.ErrClosed)
