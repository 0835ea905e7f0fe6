package api

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/jpeg"
	"image/png"
	"testing"
)

func encodedPNG(w, h int) string {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, w, h)))
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestDecodeInitImage(t *testing.T) {
	data, cfg, err := decodeInitImage("data:image/png;base64,"+encodedPNG(32, 16), 1<<20)
	if err != nil || cfg.Width != 32 || cfg.Height != 16 || len(data) == 0 {
		t.Fatalf("png data URL: %v %+v", err, cfg)
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8)), nil)
	if _, _, err := decodeInitImage(base64.RawStdEncoding.EncodeToString(buf.Bytes()), 1<<20); err != nil {
		t.Fatalf("unpadded jpeg: %v", err)
	}
	if _, _, err := decodeInitImage(encodedPNG(64, 64), 64*63); err == nil || err.Code != "limit_exceeded" {
		t.Fatalf("pixel limit: %v", err)
	}
	for _, bad := range []string{"", "data:image/png,abc", "!!!", base64.StdEncoding.EncodeToString([]byte("GIF89a...."))} {
		if _, _, err := decodeInitImage(bad, 1<<20); err == nil || err.Field != "init_image" {
			t.Errorf("%q: %v", bad, err)
		}
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
	f.Fuzz(func(t *testing.T, s string) {
		_, cfg, err := decodeInitImage(s, 4096)
		if err == nil && cfg.Width*cfg.Height > 4096 {
			t.Fatalf("accepted %dx%d over the limit", cfg.Width, cfg.Height)
		}
		if err != nil && err.Status != 400 {
			t.Fatalf("status %d", err.Status)
		}
	})
}
