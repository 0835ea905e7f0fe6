package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"image"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/kiln-project/kiln/core/imagedecode"
)

func encodedPNG(w, h int) string {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, w, h)))
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func lim(px int64) imagedecode.Limits {
	return imagedecode.Limits{MaxPixels: px, MaxSide: 4096, MaxBytes: 16 << 20}
}

func TestDecodeInitImage(t *testing.T) {
	ctx := context.Background()
	budget := imagedecode.NewBudget(64 << 20)
	data, cfg, err := decodeInitImage(ctx, "data:image/png;base64,"+encodedPNG(32, 16), lim(1<<20), budget)
	if err != nil || cfg.Width != 32 || cfg.Height != 16 || len(data) == 0 {
		t.Fatalf("png data URL: %v %+v", err, cfg)
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8)), nil)
	if _, _, err := decodeInitImage(ctx, base64.RawStdEncoding.EncodeToString(buf.Bytes()), lim(1<<20), budget); err != nil {
		t.Fatalf("unpadded jpeg: %v", err)
	}
	if _, _, err := decodeInitImage(ctx, encodedPNG(64, 64), lim(64*63), budget); err == nil || err.Code != "limit_exceeded" {
		t.Fatalf("pixel limit: %v", err)
	}
	// A 2048² PNG with 16-bit samples is within 4 Mpx but 32 MiB decoded:
	// refused from its header (issue 24, decode amplification).
	buf.Reset()
	png.Encode(&buf, image.NewNRGBA64(image.Rect(0, 0, 2048, 2048)))
	if _, _, err := decodeInitImage(ctx, base64.StdEncoding.EncodeToString(buf.Bytes()), lim(4<<20), budget); err == nil || err.Code != "limit_exceeded" || err.Status != 400 {
		t.Fatalf("16-bit bomb: %v", err)
	}
	for _, bad := range []string{"", "data:image/png,abc", "!!!", base64.StdEncoding.EncodeToString([]byte("GIF89a...."))} {
		if _, _, err := decodeInitImage(ctx, bad, lim(1<<20), budget); err == nil || err.Field != "init_image" {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if budget.InUse() != 0 {
		t.Fatalf("decode budget still holds %d bytes", budget.InUse())
	}
}

// FuzzDecodeInitImage: any input gives an image or a 400, never a panic or
// a decode of more pixels than the limit.
func FuzzDecodeInitImage(f *testing.F) {
	f.Add(encodedPNG(4, 4))
	f.Add("data:image/png;base64," + encodedPNG(1, 1))
	var buf bytes.Buffer
	jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 3, 5)), nil)
	f.Add(base64.StdEncoding.EncodeToString(buf.Bytes()))
	budget := imagedecode.NewBudget(1 << 20)
	f.Fuzz(func(t *testing.T, s string) {
		_, cfg, err := decodeInitImage(context.Background(), s, imagedecode.Limits{MaxPixels: 4096, MaxSide: 4096, MaxBytes: 1 << 20}, budget)
		if err == nil && cfg.Width*cfg.Height > 4096 {
			t.Fatalf("accepted %dx%d over the limit", cfg.Width, cfg.Height)
		}
		if err != nil && err.Status != 400 {
			t.Fatalf("status %d", err.Status)
		}
	})
}
