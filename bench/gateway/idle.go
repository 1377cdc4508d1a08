package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/meridian-platform/meridian/bench/internal/benchenv"
)

// memRun is one system's idle-connection memory figure.
type memRun struct {
	system      string
	conns       int   // connections that made their request and were held
	rssBefore   int64 // bytes, the tree's VmRSS before opening them
	rssAfter    int64 // with them open and idle
	openSockets int   // sockets the tree held with them open, minus before
	kibPerConn  float64
}

func (b *bench) memoryPhase(ctx context.Context) []memRun {
	var out []memRun
	for _, s := range b.systems {
		if ctx.Err() != nil {
			break
		}
		// Room for the connections in this process and in the proxy.
		n := min(b.idleConns, b.nofile-500)
		if s == haproxyName {
			n = min(n, haproxyMaxConn(b.nofile)-200)
		}
		if n < 100 {
			b.fail("memory, %s: the open-files limit (%d) leaves no room for the connections", s, b.nofile)
			continue
		}
		if n < b.idleConns {
			logf(b.log, "the open-files limit (ulimit -n %d) leaves room for %d connections to %s, not %d", b.nofile, n, s, b.idleConns)
		}
		b.waitNoBuild(ctx)
		logf(b.log, "memory: %d idle keep-alive connections to %s", n, s)
		m, err := b.memoryOnce(ctx, s, n)
		if err != nil {
			b.fail("memory, %s: %v", s, err)
			continue
		}
		logf(b.log, "  RSS %.1f → %.1f MiB: %.2f KiB per connection (%d sockets held)",
			float64(m.rssBefore)/(1<<20), float64(m.rssAfter)/(1<<20), m.kibPerConn, m.openSockets)
		b.record("memory", 1, s, "rss_before_bytes", float64(m.rssBefore))
		b.record("memory", 1, s, "rss_after_bytes", float64(m.rssAfter))
		b.record("memory", 1, s, "conns", float64(m.conns))
		b.record("memory", 1, s, "sockets_held", float64(m.openSockets))
		b.record("memory", 1, s, "kib_per_conn", m.kibPerConn)
		out = append(out, m)
	}
	return out
}

// memoryOnce starts the system, sends it a few hundred requests so that
// its pools and lazy state exist, reads its RSS, then opens n keep-alive
// connections that each make one request and stay open and idle, waits
// for the proxy to settle and reads its RSS again. For direct the process
// is the upstream, already running.
func (b *bench) memoryOnce(ctx context.Context, system string, n int) (memRun, error) {
	m := memRun{system: system}
	t, err := b.startSystem(ctx, system, filepath.Join(b.dir, "memory-"+system))
	if err != nil {
		return m, err
	}
	defer func() {
		if err := t.stop(); err != nil {
			logf(b.log, "%v", err)
		}
	}()
	pid := b.upstreamPID
	if t.proc != nil {
		pid = t.proc.PID()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", t.port)
	var auth string
	if authed(system) {
		auth = "Bearer " + b.token
	}
	req := []byte("GET /bench HTTP/1.1\r\nHost: " + addr + "\r\n" + ifThen(auth != "", "Authorization: "+auth+"\r\n") + "\r\n")

	warm, err := openIdle(ctx, addr, req, 200, 8)
	closeAll(warm)
	if err != nil {
		return m, fmt.Errorf("warm-up: %w", err)
	}
	time.Sleep(time.Second)
	before, err := benchenv.TreeUsage(pid)
	if err != nil {
		return m, err
	}
	sockBefore := sockets(pid)

	conns, err := openIdle(ctx, addr, req, n, 64)
	defer closeAll(conns)
	if err != nil {
		return m, fmt.Errorf("after %d connections: %w", len(conns), err)
	}
	time.Sleep(2 * time.Second)
	after, err := benchenv.TreeUsage(pid)
	if err != nil {
		return m, err
	}
	m.conns, m.rssBefore, m.rssAfter = len(conns), before.RSS, after.RSS
	m.openSockets = sockets(pid) - sockBefore
	m.kibPerConn = float64(after.RSS-before.RSS) / 1024 / float64(len(conns))
	if m.openSockets < len(conns)*9/10 {
		return m, fmt.Errorf("the proxy holds %d more sockets, not %d: it closed idle connections, so the figure would be too low", m.openSockets, len(conns))
	}
	return m, nil
}

// openIdle opens n connections to addr, par at a time; each sends req
// and reads the whole answer (which must be 200), and is then left open.
func openIdle(ctx context.Context, addr string, req []byte, n, par int) ([]net.Conn, error) {
	var (
		mu    sync.Mutex
		conns []net.Conn
		first error
		wg    sync.WaitGroup
	)
	next := make(chan struct{})
	for range par {
		wg.Go(func() {
			for range next {
				c, err := oneRequest(ctx, addr, req)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if c != nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return conns, first
}

func oneRequest(ctx context.Context, addr string, req []byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fail := func(err error) (net.Conn, error) {
		closeAll([]net.Conn{c})
		return nil, err
	}
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		return fail(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return fail(err)
	case resp.StatusCode != http.StatusOK:
		return fail(fmt.Errorf("status %d", resp.StatusCode))
	case resp.Close:
		return fail(fmt.Errorf("the proxy closed the connection after one request"))
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// closeAll closes with a reset (SO_LINGER 0), so that thousands of closed
// connections leave no TIME_WAIT behind to use up loopback's ports.
func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// sockets counts the socket descriptors the process tree holds.
func sockets(pid int) int {
	n := 0
	for _, p := range benchenv.Tree(pid) {
		dir := fmt.Sprintf("/proc/%d/fd", p)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				n++
			}
		}
	}
	return n
}
