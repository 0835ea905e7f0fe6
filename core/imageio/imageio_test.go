package imageio

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"reflect"
	"testing"
)

func testImage() *image.RGBA {
	im := image.NewRGBA(image.Rect(0, 0, 5, 3))
	for y := 0; y < 3; y++ {
		for x := 0; x < 5; x++ {
			im.Set(x, y, color.RGBA{uint8(40 * x), uint8(80 * y), 7, 255})
		}
	}
	return im
}

// TestPNGRoundTrip writes an image with Latin-1 and non-Latin-1 text and
// reads back both the image and the text.
func TestPNGRoundTrip(t *testing.T) {
	params := Parameters{
		Prompt:         "café, a red circle\non two lines",
		NegativePrompt: "blurry, low quality 🚀",
		Fields: []Field{{"Steps", "20"}, {"Sampler", "Euler a"}, {"CFG scale", "7.5"}, {"Seed", "1234"},
			{"Size", "512x512"}, {"Model", "weird, name: x"}},
	}
	var buf bytes.Buffer
	texts := []Text{{ParametersKey, params.String()}, {"Software", "Kiln"}}
	if err := WritePNG(&buf, testImage(), texts...); err != nil {
		t.Fatal(err)
	}
	im, err := png.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("standard decoder rejects the file: %v", err)
	}
	want := testImage()
	for y := 0; y < 3; y++ {
		for x := 0; x < 5; x++ {
			if im.At(x, y) != want.At(x, y) {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, im.At(x, y), want.At(x, y))
			}
		}
	}
	got, err := ReadText(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, texts) {
		t.Fatalf("texts %q, want %q", got, texts)
	}
	// the non-Latin-1 parameters went into an iTXt chunk, Software into tEXt
	if !bytes.Contains(buf.Bytes(), []byte("iTXtparameters")) || !bytes.Contains(buf.Bytes(), []byte("tEXtSoftware")) {
		t.Fatal("chunk types")
	}
	s, err := ReadParameters(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseParameters(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, params) {
		t.Fatalf("parameters round trip:\n got %#v\nwant %#v", back, params)
	}
}

// TestParseA1111 parses parameters as AUTOMATIC1111 writes them.
func TestParseA1111(t *testing.T) {
	text := "masterpiece, (best quality:1.2), 1girl\nNegative prompt: lowres, bad hands\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3861, Size: 512x768, Model hash: 6ce0161689, Model: v1-5, Denoising strength: 0.55, Clip skip: 2, Lora hashes: \"x: 1a2b, y: 3c4d\", Version: v1.6.0"
	p, err := ParseParameters(text)
	if err != nil {
		t.Fatal(err)
	}
	if p.Prompt != "masterpiece, (best quality:1.2), 1girl" || p.NegativePrompt != "lowres, bad hands" {
		t.Fatalf("prompts %q / %q", p.Prompt, p.NegativePrompt)
	}
	if v, _ := p.Get("Lora hashes"); v != "x: 1a2b, y: 3c4d" {
		t.Fatalf("quoted value %q", v)
	}
	if seed, err := p.Int("Seed"); err != nil || seed != 3861 {
		t.Fatalf("seed %d %v", seed, err)
	}
	if cfg, err := p.Float("CFG scale"); err != nil || cfg != 7 {
		t.Fatalf("cfg %v %v", cfg, err)
	}
	if len(p.Fields) != 11 {
		t.Fatalf("%d fields", len(p.Fields))
	}
	if p.String() != text {
		t.Fatalf("re-formatting changed the text:\n%s\n%s", p.String(), text)
	}
	// a prompt only: no fields line
	p, err = ParseParameters("just a prompt: with a colon")
	if err != nil || p.Prompt != "just a prompt: with a colon" || len(p.Fields) != 0 {
		t.Fatalf("%#v %v", p, err)
	}
}

// TestReadTextCompressed reads zTXt and compressed iTXt chunks as other
// tools may write them.
func TestReadTextCompressed(t *testing.T) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, testImage()); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write([]byte("zipped"))
	zw.Close()
	var extra bytes.Buffer
	writeChunk(&extra, "zTXt", append([]byte("a\x00\x00"), z.Bytes()...))
	writeChunk(&extra, "iTXt", append([]byte("b\x00\x01\x00en\x00B\x00"), z.Bytes()...))
	file := append(append(append([]byte{}, data[:33]...), extra.Bytes()...), data[33:]...)
	got, err := ReadText(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []Text{{"a", "zipped"}, {"b", "zipped"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
}

func TestReadTextErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePNG(&buf, testImage(), Text{"k", "v"}); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	bad := append([]byte{}, good...)
	bad[33+8+1] ^= 0xff // corrupt the text chunk's data: CRC mismatch
	cases := map[string][]byte{
		"not png":   []byte("GIF89a..."),
		"truncated": good[:40],
		"bad crc":   bad,
		"empty":     nil,
	}
	for name, b := range cases {
		if _, err := ReadText(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := WritePNG(&bytes.Buffer{}, testImage(), Text{"", "v"}); err == nil {
		t.Error("empty keyword accepted")
	}
	// a huge declared length must not be allocated
	var huge bytes.Buffer
	huge.Write(good[:33])
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], 1<<30)
	copy(hdr[4:], "tEXt")
	huge.Write(hdr[:])
	_ = crc32.IEEE
	if _, err := ReadText(&huge); err == nil {
		t.Error("oversized chunk accepted")
	}
}
