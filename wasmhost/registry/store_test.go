package registry

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func testStore(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Get(ctx, "v1/a/x.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	for _, k := range []string{"v1/a/x.json", "v1/a/b/1.wasm", "v1/b/y.json"} {
		if err := s.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "v1/a/x.json", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Get(ctx, "v1/a/x.json"); err != nil || string(b) != "new" {
		t.Fatalf("get: %q %v", b, err)
	}
	keys, err := s.List(ctx, "v1/a/")
	if err != nil || !reflect.DeepEqual(keys, []string{"v1/a/b/1.wasm", "v1/a/x.json"}) {
		t.Fatalf("list: %v %v", keys, err)
	}
	if err := s.Delete(ctx, "v1/a/x.json"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "v1/a/x.json"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if keys, _ := s.List(ctx, "v1/a/"); len(keys) != 1 {
		t.Fatalf("after delete: %v", keys)
	}
	for _, bad := range []string{"", "/abs", "a/../b", "A/b", "a//b", "a/b/"} {
		if err := s.Put(ctx, bad, nil); err == nil {
			t.Fatalf("key %q accepted", bad)
		}
	}
}

func TestMemStore(t *testing.T) { testStore(t, NewMemStore()) }

func TestDirStore(t *testing.T) {
	s, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

func TestObjectStore(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenObjectStore(ctx, js, ModulesBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

// TestObjectStoreFollow: two registries share one JetStream bucket, as a
// gateway and a worker process do; an activation in one is followed by
// the other.
func TestObjectStoreFollow(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func() *Registry {
		s, err := OpenObjectStore(ctx, js, ModulesBucket, 1)
		if err != nil {
			t.Fatal(err)
		}
		return newRegistry(t, s)
	}
	gateway, worker := open(), open()
	if err := worker.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	in := batchingInput(10)
	in.MaxWaitUS = 1
	if out, _ := worker.Batching(ctx, in); len(out.Jobs) < 2 {
		t.Fatalf("built-in decision %+v", out)
	}
	if _, err := gateway.Upload(ctx, UploadRequest{Kind: KindBatching, Name: "first", Wasm: firstJob(), Mode: ModeActivate}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, o := worker.Batching(ctx, in)
		if len(out.Jobs) == 1 && o.OK() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker never followed the activation: %+v", out)
		}
	}
}
