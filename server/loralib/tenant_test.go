package loralib

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTenantUploads(t *testing.T) {
	dir := t.TempDir()
	l := New(dir)
	write(t, filepath.Join(dir, "loras", "shared.safetensors"), 1)
	write(t, filepath.Join(dir, "loras", "style.safetensors"), 2)
	src := filepath.Join(t.TempDir(), "up.safetensors")
	write(t, src, 7)
	body := func() *os.File {
		f, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	ok := func(string) error { return nil }
	// refused by the check: nothing stored
	if _, err := l.Put("acme", "style", body(), 1<<20, func(string) error { return errors.New("bad key x") }); err == nil || err.Error() != "bad key x" {
		t.Fatalf("check error lost: %v", err)
	}
	if _, err := l.Put("acme", "style", body(), 10, ok); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("size limit: %v", err)
	}
	for _, bad := range []string{"../x", ".hidden", "a/b", "x.safetensors", "", strings.Repeat("a", 65)} {
		if _, err := l.Put("acme", bad, body(), 1<<20, ok); err == nil {
			t.Fatalf("name %q accepted", bad)
		}
	}
	if es, _ := l.ListFor("acme", LoRAs); len(es) != 2 || es[1].Tenant {
		t.Fatalf("refused uploads left files: %+v", es)
	}
	e, err := l.Put("acme", "style", body(), 1<<20, ok)
	if err != nil || !e.Tenant || e.Name != "style" {
		t.Fatalf("put: %+v %v", e, err)
	}
	// acme sees its own "style" (hiding the installed one); others do not
	es, err := l.ListFor("acme", LoRAs)
	if err != nil || len(es) != 2 || es[1].Name != "style" || !es[1].Tenant || es[1].Hash != e.Hash {
		t.Fatalf("acme's list: %+v %v", es, err)
	}
	for _, other := range []string{"other", ""} {
		es, _ := l.ListFor(other, LoRAs)
		for _, x := range es {
			if x.Tenant || x.Hash == e.Hash {
				t.Fatalf("%q sees acme's upload: %+v", other, es)
			}
		}
		if f, err := l.FindFor(other, LoRAs, "style"); err != nil || f.Tenant {
			t.Fatalf("%q finds %+v %v", other, f, err)
		}
	}
	if es, _ := l.List(LoRAs); len(es) != 2 {
		t.Fatalf("shared list shows uploads: %+v", es)
	}
	if f, err := l.FindFor("acme", LoRAs, "style"); err != nil || !f.Tenant || f.Path == "" {
		t.Fatalf("acme finds %+v %v", f, err)
	}
	var u *UnknownError
	if _, err := l.FindFor("acme", LoRAs, "styl"); !errors.As(err, &u) || len(u.Close) == 0 {
		t.Fatalf("close matches: %v", err)
	}
	// durable: a new Library over the same folder sees it
	if f, err := New(dir).FindFor("acme", LoRAs, "style"); err != nil || f.Hash != e.Hash {
		t.Fatalf("after restart: %+v %v", f, err)
	}
	if err := l.Delete("other", "style"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("other tenant deleted acme's: %v", err)
	}
	if err := l.Delete("acme", "style"); err != nil {
		t.Fatal(err)
	}
	if err := l.Delete("acme", "style"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("second delete: %v", err)
	}
	if f, err := l.FindFor("acme", LoRAs, "style"); err != nil || f.Tenant {
		t.Fatalf("after delete: %+v %v", f, err)
	}
}
