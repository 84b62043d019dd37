// Package tcpproxy is a TCP relay for tests that need a database to go
// away and come back: while up it forwards each connection to its target;
// cut, it closes every open connection and refuses new ones at once, as a
// database host that went away would. It stands between the service and
// PostgreSQL wherever PostgreSQL runs (local, Docker, external). Silent is
// the host that hangs instead.
package tcpproxy

import (
	"io"
	"net"
	"sync"
)

// Proxy relays connections from Addr to a target.
type Proxy struct {
	target string
	l      net.Listener

	mu    sync.Mutex
	up    bool
	conns []net.Conn
}

// Start listens on an ephemeral loopback port and relays to target,
// starting up.
func Start(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, l: l, up: true}
	go p.serve()
	return p, nil
}

// Addr is the host:port to connect to instead of the target.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Cut closes every relayed connection and refuses new ones until Restore.
func (p *Proxy) Cut() { p.set(false) }

// Restore relays new connections again.
func (p *Proxy) Restore() { p.set(true) }

// Close stops listening and cuts every connection.
func (p *Proxy) Close() error {
	err := p.l.Close()
	p.set(false)
	return err
}

func (p *Proxy) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *Proxy) relay(c net.Conn) {
	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	if !up {
		c.Close()
		return
	}
	d, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if !p.up { // cut while dialling
		p.mu.Unlock()
		c.Close()
		d.Close()
		return
	}
	p.conns = append(p.conns, c, d)
	p.mu.Unlock()
	go pipe(d, c)
	pipe(c, d)
}

// pipe copies until either side ends, then closes both, so that the other
// direction ends too.
func pipe(dst, src net.Conn) {
	io.Copy(dst, src) //nolint:errcheck // ends when either side closes
	dst.Close()
	src.Close()
}

// Silent is a database host that hangs: it accepts connections and never
// says a word, as a server stuck or behind a black-holed route would.
type Silent struct {
	l net.Listener

	mu    sync.Mutex
	conns []net.Conn
}

// StartSilent listens on an ephemeral loopback port.
func StartSilent() (*Silent, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Silent{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	return s, nil
}

// Addr is the host:port to connect to.
func (s *Silent) Addr() string { return s.l.Addr().String() }

// Close stops listening and closes every connection it took.
func (s *Silent) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	return err
}
