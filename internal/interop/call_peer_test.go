package interop

import (
	"context"
	"strings"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
)

// callEndpoint drives a securecall Call as an endpoint.
type callEndpoint struct {
	*securecall.Call
	h    media.RTPHeader
	step uint32
}

var _ endpoint = (*callEndpoint)(nil)

func newCallEndpoint(cfg securecall.Config) (*callEndpoint, error) {
	c, err := securecall.New(cfg)
	if err != nil {
		return nil, err
	}
	return &callEndpoint{Call: c}, nil
}

func (e *callEndpoint) Codec() (string, uint8) {
	f := e.Call.Codec()
	return strings.ToLower(f.Name), f.PayloadType
}

func (e *callEndpoint) WriteAudio(payload []byte) error {
	if e.step == 0 {
		f := e.Call.Codec()
		e.h = media.RTPHeader{PayloadType: f.PayloadType, SSRC: e.Call.SSRC(), Marker: true}
		e.step = uint32(f.ClockRate / 50)
	}
	err := e.Call.WriteRTP(e.h, payload)
	e.h.Marker = false
	e.h.SequenceNumber++
	e.h.Timestamp += e.step
	return err
}

func (e *callEndpoint) ReadAudio(_ context.Context, buf []byte) (uint8, int, error) {
	h, n, err := e.Call.ReadRTP(buf)
	return h.PayloadType, n, err
}
