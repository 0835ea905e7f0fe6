package pngtext

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"testing"
)

func sample() image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 4, 3))
	for y := 0; y < 3; y++ {
		for x := 0; x < 4; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 60), uint8(y * 80), 7, 255})
		}
	}
	return img
}

func TestRoundTrip(t *testing.T) {
	params := "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 4x3"
	data, err := Encode(sample(), Chunk{"parameters", params}, Chunk{"comment", "日本語 ✓"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Read(data)
	if err != nil {
		t.Fatal(err)
	}
	if got["parameters"] != params {
		t.Fatalf("parameters = %q", got["parameters"])
	}
	if got["comment"] != "日本語 ✓" {
		t.Fatalf("comment = %q", got["comment"])
	}
	// The file still decodes as the same image.
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds() != sample().Bounds() || img.At(3, 2) != sample().At(3, 2) {
		t.Fatalf("image changed")
	}
}

func TestReadRejectsCorruption(t *testing.T) {
	data, err := Encode(sample(), Chunk{"parameters", "x"})
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	bad[40] ^= 0xff // inside the tEXt chunk
	if _, err := Read(bad); err == nil {
		t.Fatal("corrupted chunk accepted")
	}
	if _, err := Read(data[:30]); err == nil {
		t.Fatal("truncated file accepted")
	}
	if _, err := Read([]byte("GIF89a")); err == nil {
		t.Fatal("non-PNG accepted")
	}
}

func TestBadKeyword(t *testing.T) {
	if _, err := Encode(sample(), Chunk{"", "x"}); err == nil {
		t.Fatal("empty keyword accepted")
	}
	if _, err := Encode(sample(), Chunk{"bad\x00kw", "x"}); err == nil {
		t.Fatal("keyword with NUL accepted")
	}
}

func FuzzRead(f *testing.F) {
	data, _ := Encode(sample(), Chunk{"parameters", "seed corpus"}, Chunk{"u", "ü ✓"})
	f.Add(data)
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Read(b)
		if err == nil && m == nil {
			t.Fatal("nil map without error")
		}
	})
}
