package imagedecode

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHeader(t *testing.T) {
	var jp bytes.Buffer
	jpeg.Encode(&jp, image.NewRGBA(image.Rect(0, 0, 24, 10)), nil)
	for _, c := range []struct {
		name  string
		data  []byte
		want  Info
		bytes int64
	}{
		{"rgba8", encodePNG(t, image.NewNRGBA(image.Rect(0, 0, 5, 3))), Info{Format: "png", Width: 5, Height: 3, Channels: 4, BitDepth: 8}, 5 * 3 * 4},
		{"rgba16", encodePNG(t, image.NewNRGBA64(image.Rect(0, 0, 5, 3))), Info{Format: "png", Width: 5, Height: 3, Channels: 4, BitDepth: 16}, 5 * 3 * 8},
		{"gray16", encodePNG(t, image.NewGray16(image.Rect(0, 0, 5, 3))), Info{Format: "png", Width: 5, Height: 3, Channels: 1, BitDepth: 16}, 5 * 3 * 2},
		{"paletted", encodePNG(t, image.NewPaletted(image.Rect(0, 0, 5, 3), color.Palette{color.Black, color.White})), Info{Format: "png", Width: 5, Height: 3, Channels: 1, BitDepth: 1}, 5 * 3},
		{"jpeg", jp.Bytes(), Info{Format: "jpeg", Width: 24, Height: 10, Channels: 3, BitDepth: 8}, 24 * 10 * 3},
	} {
		got, err := Header(c.data)
		got.colorType = 0
		if err != nil || got != c.want || func() int64 { g, _ := Header(c.data); return g.DecodedBytes() }() != c.bytes {
			t.Errorf("%s: %+v %v, want %+v (%d bytes)", c.name, got, err, c.want, c.bytes)
		}
	}
	for _, bad := range [][]byte{nil, []byte("GIF89a"), pngSignature, append(append([]byte{}, pngSignature...), make([]byte, 30)...),
		{0xFF, 0xD8}, {0xFF, 0xD8, 0xFF, 0xC0, 0x00}, {0xFF, 0xD8, 0xFF, 0xDA, 0, 2}} {
		if _, err := Header(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// bomb16 is a 2048×2048 RGBA PNG with 16-bit samples: tens of KB on the
// wire (it is flat), 32 MiB once decoded.
func bomb16(t testing.TB) []byte {
	return encodePNG(t, image.NewNRGBA64(image.Rect(0, 0, 2048, 2048)))
}

// TestDecodeRefusesFromTheHeader: a deep PNG within a pixel limit is
// refused by its decoded size before any pixel is decoded (issue 24,
// decode amplification).
func TestDecodeRefusesFromTheHeader(t *testing.T) {
	data := bomb16(t)
	lim := Limits{MaxPixels: 4 << 20, MaxSide: 4096, MaxBytes: 16 << 20}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, info, err := Decode(context.Background(), data, lim, nil)
	runtime.ReadMemStats(&after)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "max_bytes" || info.DecodedBytes() != 2048*2048*8 {
		t.Fatalf("16-bit bomb: %v (%+v)", err, info)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("refusing the bomb allocated %d bytes", d)
	}
	// Within the limits it decodes.
	small := encodePNG(t, image.NewNRGBA64(image.Rect(0, 0, 64, 32)))
	img, _, err := Decode(context.Background(), small, lim, NewBudget(1<<20))
	if err != nil || img.Bounds().Dx() != 64 {
		t.Fatalf("small image: %v", err)
	}
	// Truncated images fail cleanly.
	if _, _, err := Decode(context.Background(), small[:len(small)/2], lim, nil); err == nil {
		t.Fatal("truncated image decoded")
	}
}

// TestBudgetBoundsConcurrentDecodes: decodes in flight never hold more
// than the budget, waiters proceed in turn, and a waiter gives up with
// its context.
func TestBudgetBoundsConcurrentDecodes(t *testing.T) {
	b := NewBudget(100)
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := b.Acquire(context.Background(), 30)
			if err != nil {
				t.Error(err)
				return
			}
			h := held.Add(30)
			for {
				p := peak.Load()
				if h <= p || peak.CompareAndSwap(p, h) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			held.Add(-30)
			release()
		}()
	}
	wg.Wait()
	if peak.Load() > 100 || b.InUse() != 0 {
		t.Fatalf("peak %d, in use %d", peak.Load(), b.InUse())
	}
	if _, err := b.Acquire(context.Background(), 101); !errors.Is(err, ErrBusy) {
		t.Fatalf("over the whole budget: %v", err)
	}
	release, _ := b.Acquire(context.Background(), 80)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Acquire(ctx, 30); !errors.Is(err, ErrBusy) {
		t.Fatalf("waiter past its deadline: %v", err)
	}
	release()
	if b.InUse() != 0 {
		t.Fatalf("in use %d after all releases", b.InUse())
	}
	// Twenty concurrent bombs under a budget of two never hold more.
	data := encodePNG(t, image.NewNRGBA64(image.Rect(0, 0, 256, 256)))
	bb := NewBudget(2 * 256 * 256 * 8)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := Decode(context.Background(), data, Limits{}, bb); err != nil {
				t.Error(err)
			}
			if u := bb.InUse(); u > 2*256*256*8 {
				t.Errorf("in use %d", u)
			}
		}()
	}
	wg.Wait()
}

// FuzzHeader: any input gives an Info whose decode fits what the header
// promised, or an error; never a panic.
func FuzzHeader(f *testing.F) {
	f.Add(encodePNG(f, image.NewNRGBA(image.Rect(0, 0, 3, 2))))
	f.Add(encodePNG(f, image.NewGray16(image.Rect(0, 0, 2, 2))))
	var jp bytes.Buffer
	jpeg.Encode(&jp, image.NewGray(image.Rect(0, 0, 8, 8)), nil)
	f.Add(jp.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		img, info, err := Decode(context.Background(), data, Limits{MaxPixels: 1 << 16, MaxSide: 1024, MaxBytes: 1 << 20}, NewBudget(1<<20))
		if err != nil {
			return
		}
		if info.DecodedBytes() > 1<<20 || img.Bounds().Dx() != info.Width || img.Bounds().Dy() != info.Height {
			t.Fatalf("decoded %v for header %+v", img.Bounds(), info)
		}
	})
}
