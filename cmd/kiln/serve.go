package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/web"
)

// runServe starts the server and blocks until SIGTERM or SIGINT.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Load("kiln serve", args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	log := newLogger(cfg, stderr)
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: log, Web: web.Handler()})
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	return in.Stop(context.Background())
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// fprintf writes to w, ignoring errors (terminal output).
func fprintf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
