package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServerConfig configures the gateway's listener. Zero fields take the
// defaults written on them.
type ServerConfig struct {
	// TLSCert and TLSKey are PEM files; both set: the listener speaks
	// TLS with HTTP/2 negotiated by ALPN. Neither: plain HTTP/1.1 and
	// HTTP/2 with prior knowledge (h2c), as gRPC clients use.
	TLSCert, TLSKey string
	// ReadHeaderTimeout bounds the reading of a request's headers, against
	// slowloris. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default
	// 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block. Default 64 KiB.
	MaxHeaderBytes int
	// ShutdownTimeout bounds the graceful drain when the context ends;
	// then the remaining connections are closed. Default 30s.
	ShutdownTimeout time.Duration
	// Logger receives the server's own errors (bad TLS handshakes, …).
	Logger *slog.Logger
}

// Serve answers requests on ln with h until ctx ends, then stops
// accepting, lets requests in flight finish (up to ShutdownTimeout) and
// returns. Upgraded connections (WebSocket) are not waited for: they end
// when their peers close them or the process exits.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, cfg ServerConfig) error {
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		Protocols:         &p,
	}
	useTLS := cfg.TLSCert != "" || cfg.TLSKey != ""
	if useTLS {
		// Load now so that a bad pair fails at start, not at the first
		// handshake.
		if _, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
		p.SetHTTP2(true) // negotiated by ALPN
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	done := make(chan error, 1)
	go func() {
		if useTLS {
			done <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
			return
		}
		done <- srv.Serve(ln)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
		err = nil
	}
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
