package scenes

import (
	"bytes"
	"image/png"
	"math/rand/v2"
	"testing"
)

func TestCaptionRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		s := Random(r, 0.3)
		got, err := ParseCaption(s.Caption())
		if err != nil {
			t.Fatalf("%q: %v", s.Caption(), err)
		}
		if got.Caption() != s.Caption() {
			t.Fatalf("round trip %q → %q", s.Caption(), got.Caption())
		}
		for _, o := range s.Objects {
			if o.Colour == s.Background {
				t.Fatalf("%q: object colour equals the background", s.Caption())
			}
		}
	}
}

func TestRenderDeterministic(t *testing.T) {
	s := Scene{Background: "black", Objects: []Object{{Colour: "yellow", Shape: "star", Size: "large", Position: "at the top"}}}
	enc := func() []byte {
		img, err := Render(s, 64, rand.New(rand.NewPCG(3, 4)))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if !bytes.Equal(enc(), enc()) {
		t.Fatal("same seed rendered two different images")
	}
}

func TestRenderErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	bad := []Scene{
		{Background: "mauve", Objects: []Object{{Colour: "red", Shape: "circle"}}},
		{Background: "blue", Objects: []Object{{Colour: "red", Shape: "blob"}}},
		{Background: "blue", Objects: []Object{{Colour: "red", Shape: "circle", Position: "nowhere"}}},
	}
	for _, s := range bad {
		if _, err := Render(s, 64, r); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	if _, err := Render(bad[0], 8, r); err == nil {
		t.Error("tiny size: no error")
	}
}
