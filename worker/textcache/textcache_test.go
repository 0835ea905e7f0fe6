package textcache

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestHitAvoidsRecompute(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var calls atomic.Int32
	enc := func() (*Value, error) {
		calls.Add(1)
		return &Value{Hidden: make([]float32, 77*32), HiddenShape: []int{1, 77, 32}}, nil
	}
	k := Key{Encoder: "h1", Prompt: "blurry, low quality", ClipSkip: 1}
	for i := 0; i < 5; i++ {
		v, err := c.Get(k, enc)
		if err != nil || len(v.Hidden) != 77*32 {
			t.Fatalf("get: %v", err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("encoder ran %d times for one key", calls.Load())
	}
	// Each key component separates entries.
	for _, k2 := range []Key{
		{Encoder: "h2", Prompt: k.Prompt, ClipSkip: 1},
		{Encoder: "h1", Prompt: k.Prompt, ClipSkip: 2},
		{Encoder: "h1", Prompt: k.Prompt, ClipSkip: 1, Emphasis: true},
		{Encoder: "h1", Prompt: "blurry, low quality!", ClipSkip: 1},
		{Encoder: "h1", Prompt: k.Prompt, ClipSkip: 1, Adapters: "lora:style@ab12:1;"},
		{Encoder: "h1", Prompt: k.Prompt, Prompt2: "a second prompt", ClipSkip: 1},
	} {
		if _, err := c.Get(k2, enc); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 7 {
		t.Fatalf("encoder ran %d times, want 7", calls.Load())
	}
	hits, misses, ratio := c.Stats()
	if hits != 4 || misses != 7 || ratio <= 0.36 || ratio >= 0.37 {
		t.Fatalf("stats hits=%d misses=%d ratio=%v", hits, misses, ratio)
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	c, _ := New(1 << 20)
	defer c.Close()
	boom := errors.New("boom")
	if _, err := c.Get(Key{Prompt: "x"}, func() (*Value, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	v, err := c.Get(Key{Prompt: "x"}, func() (*Value, error) { return &Value{Hidden: []float32{1}}, nil })
	if err != nil || v.Hidden[0] != 1 {
		t.Fatalf("retry after error: %v", err)
	}
}

func TestConcurrentCallsComputeOnce(t *testing.T) {
	c, _ := New(1 << 20)
	defer c.Close()
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Get(Key{Prompt: "same"}, func() (*Value, error) {
				calls.Add(1)
				<-release
				return &Value{Hidden: []float32{2}}, nil
			})
		}()
	}
	close(release)
	wg.Wait()
	// Goroutines that started after the first finished hit the cache; the
	// rest waited on its flight. Either way the encoder ran once.
	if calls.Load() != 1 {
		t.Fatalf("encoder ran %d times", calls.Load())
	}
}

func TestHashFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	os.WriteFile(a, []byte("weights-v1"), 0o644)
	h1, err := HashFiles(a)
	if err != nil {
		t.Fatal(err)
	}
	if h1 != HashBytes([]byte("weights-v1")) {
		t.Fatalf("HashFiles and HashBytes disagree")
	}
	os.WriteFile(a, []byte("weights-v2"), 0o644)
	h2, _ := HashFiles(a)
	if h1 == h2 {
		t.Fatal("different contents, same hash")
	}
	if _, err := HashFiles(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file hashed")
	}
}
