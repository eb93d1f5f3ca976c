package server

import (
	"net"

	"github.com/nixcas/nixcas/server/auth"
)

// authPolicy is the token policy of o on these listeners (httpLn may be
// nil): without a push token, writes are refused when a listener is bound
// to a non-loopback address, unless o.AllowAnonymousWrites.
func authPolicy(o Options, lns ...net.Listener) auth.Policy {
	p := auth.Policy{PushToken: o.PushToken, ReadToken: o.ReadToken}
	if o.PushToken == "" && !o.AllowAnonymousWrites {
		for _, ln := range lns {
			if ln != nil && !isLoopback(ln.Addr()) {
				p.RefuseAnonymousWrites = true
			}
		}
	}
	return p
}

// isLoopback reports whether a is a loopback address; an unspecified
// address (0.0.0.0, ::) listens on every interface and is not.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
