// Package broker connects a Kiln process to NATS JetStream: it either runs
// an embedded NATS server with JetStream storing under the data directory
// (reached in-process, with no network listener unless one is asked for) or
// joins an external server by URL.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure Start.
type Options struct {
	// URL of an external NATS server; empty starts an embedded one.
	URL string
	// DataDir holds the embedded server's JetStream store (DataDir/jetstream).
	DataDir string
	// Listen is host:port for the embedded server to accept other processes
	// on; empty means in-process connections only.
	Listen string
	// Name names the connection (shown by NATS monitoring).
	Name string
	// Logger receives the embedded server's log lines; nil discards them.
	Logger *slog.Logger
}

// Broker is a live connection to JetStream, and the embedded server when
// there is one.
type Broker struct {
	// Conn is the NATS connection.
	Conn *nats.Conn
	// JS is the JetStream context over Conn.
	JS jetstream.JetStream

	srv  *server.Server
	lock *dirLock
}

// ErrDataDirLocked reports that another process uses the data directory.
var ErrDataDirLocked = errors.New("broker: the data directory is in use by another kiln process")

// Start connects to NATS as opts say.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	onErr := nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		logger.Debug("nats asynchronous error", "subject", subj, "err", err)
	})
	if opts.URL != "" {
		nc, err := nats.Connect(opts.URL, nats.Name(opts.Name), nats.MaxReconnects(-1),
			nats.ReconnectWait(500*time.Millisecond), onErr)
		if err != nil {
			return nil, fmt.Errorf("broker: connect %s: %w", opts.URL, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("broker: jetstream: %w", err)
		}
		return &Broker{Conn: nc, JS: js}, nil
	}
	if opts.DataDir == "" {
		return nil, errors.New("broker: no data directory for the embedded server")
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: data directory: %w", err)
	}
	lock, err := lockDir(opts.DataDir)
	if err != nil {
		return nil, err
	}
	sopts := &server.Options{
		ServerName:         "kiln",
		JetStream:          true,
		StoreDir:           filepath.Join(opts.DataDir, "jetstream"),
		DontListen:         opts.Listen == "",
		NoSigs:             true,
		NoLog:              opts.Logger == nil,
		MaxPayload:         8 << 20,
		JetStreamMaxMemory: 256 << 20,
	}
	if opts.Listen != "" {
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("broker: nats listen %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			lock.release()
			return nil, fmt.Errorf("broker: nats listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		sopts.Host, sopts.Port = host, p
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("broker: embedded server: %w", err)
	}
	if opts.Logger != nil {
		srv.SetLoggerV2(slogAdapter{opts.Logger.With("component", "nats")}, false, false, false)
	}
	srv.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !srv.ReadyForConnections(deadline) {
		srv.Shutdown()
		lock.release()
		return nil, errors.New("broker: embedded server did not become ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name(opts.Name), onErr)
	if err != nil {
		srv.Shutdown()
		lock.release()
		return nil, fmt.Errorf("broker: in-process connection: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		lock.release()
		return nil, fmt.Errorf("broker: jetstream: %w", err)
	}
	return &Broker{Conn: nc, JS: js, srv: srv, lock: lock}, nil
}

// ClientURL returns the URL other processes use to reach the embedded
// server, or "" when it has no listener (or the server is external).
func (b *Broker) ClientURL() string {
	if b.srv == nil || b.srv.Addr() == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// Embedded reports whether this broker runs the NATS server itself.
func (b *Broker) Embedded() bool { return b.srv != nil }

// Close drains the connection (delivering what is in flight), then shuts
// the embedded server down, flushing its store, and releases the data
// directory.
func (b *Broker) Close() error {
	var err error
	if b.Conn != nil && !b.Conn.IsClosed() {
		done := make(chan struct{})
		b.Conn.SetClosedHandler(func(*nats.Conn) { close(done) })
		if derr := b.Conn.Drain(); derr != nil {
			b.Conn.Close()
		} else {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				b.Conn.Close()
			}
		}
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.lock != nil {
		err = b.lock.release()
	}
	return err
}

// slogAdapter passes the NATS server's log lines to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  {}
