package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestEmbeddedServerPersistsAndLocks(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Embedded() || b.ClientURL() != "" {
		t.Fatalf("embedded without listener: url %q", b.ClientURL())
	}
	// A second process on the same data directory is refused.
	if _, err := Start(ctx, Options{DataDir: dir}); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("second start: %v", err)
	}
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened, the data is there.
	b, err = Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	kv, err = b.JS.KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("after restart: %v", err)
	}
}

func TestListenerAndExternalConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := b.ClientURL()
	if url == "" {
		t.Fatal("no client URL with a listener")
	}
	c, err := Start(ctx, Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Embedded() {
		t.Fatal("external connection claims to embed a server")
	}
	if _, err := c.JS.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream over the listener: %v", err)
	}
	if _, err := Start(ctx, Options{DataDir: t.TempDir(), Listen: "nonsense"}); err == nil {
		t.Fatal("bad listen address accepted")
	}
}
