package adapterstate

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/server/broker"
)

func TestStoreKeepsValuesAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "d")
	b, err := broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, b.JS, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "a.x"); v != nil || err != nil {
		t.Fatalf("absent key: %q %v", v, err)
	}
	for k, v := range map[string]string{"h.t1.a": "1", "h.t1.b": "2", "h.t2.a": "3", "o.t1": "4"} {
		if err := s.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "h.t1.b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "h.none"); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	b.Close()

	b, err = broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if s, err = Open(ctx, b.JS, 0, 1); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "h.t1.")
	if err != nil || len(got) != 1 || string(got["h.t1.a"]) != "1" {
		t.Fatalf("list h.t1.: %v %v", got, err)
	}
	if got, err := s.List(ctx, "none."); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %v %v", got, err)
	}
	if v, err := s.Get(ctx, "o.t1"); string(v) != "4" || err != nil {
		t.Fatalf("get after reopen: %q %v", v, err)
	}
}
