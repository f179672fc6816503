//go:build !linux

package ice

import "net"

func newBatchReader(_ *net.UDPConn, c batchConn, n, size int) (batchReader, error) {
	return newXnetReader(c, n, size), nil
}
