package benchenv

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"testing"
)

// scriptedListener stands for a listener on a port the kernel chose.
type scriptedListener struct {
	port   int
	closed bool
}

func (l *scriptedListener) Accept() (net.Conn, error) { return nil, errors.New("not listening") }
func (l *scriptedListener) Close() error              { l.closed = true; return nil }
func (l *scriptedListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: l.port}
}

// TestFreePortsSkipsReserved: whatever the kernel offers, a port of the
// shared services or of Meridian's block is never handed to a benchmark's
// server, and every listener taken is let go.
func TestFreePortsSkipsReserved(t *testing.T) {
	offered := []int{5432, 40001, 6379, 7400, 5672, 7405, 1883, 7409, 4222, 7399, 7410}
	var taken []*scriptedListener
	listen := func() (net.Listener, error) {
		if len(taken) == len(offered) {
			return nil, errors.New("no more ports")
		}
		l := &scriptedListener{port: offered[len(taken)]}
		taken = append(taken, l)
		return l, nil
	}
	got, err := freePorts(3, listen)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{40001, 7399, 7410}; !slices.Equal(got, want) {
		t.Errorf("freePorts(3) = %v, want %v", got, want)
	}
	for _, l := range taken {
		if !l.closed {
			t.Errorf("the listener on %d is still open", l.port)
		}
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 20 {
		t.Fatalf("FreePorts(20) returned %d ports", len(ports))
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || reservedPort(p) {
			t.Errorf("port %d: repeated or reserved, in %v", p, ports)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		ln.Close()
	}
}
