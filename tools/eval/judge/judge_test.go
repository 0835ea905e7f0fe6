package judge

import (
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/tools/train/scenes"
)

// TestJudgeOnGroundTruth validates the judge on the dataset's own images:
// it must accept at least 98% of correctly captioned renders.
func TestJudgeOnGroundTruth(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 11))
	const n = 300
	pass := 0
	for i := 0; i < n; i++ {
		s := scenes.Random(r, 0.3)
		img, err := scenes.Render(s, 128, r)
		if err != nil {
			t.Fatal(err)
		}
		v := JudgeScene(s, img)
		if v.Pass {
			pass++
		} else {
			t.Logf("rejected %q: %s", s.Caption(), v)
		}
	}
	if acc := float64(pass) / n; acc < 0.98 {
		t.Fatalf("judge accuracy on ground truth %.3f < 0.98", acc)
	} else {
		t.Logf("judge accuracy on ground truth: %.3f over %d images", acc, n)
	}
}

// TestJudgeRejectsWrongCaptions makes sure the judge is not a rubber stamp:
// changing any one property of the caption must make it fail.
func TestJudgeRejectsWrongCaptions(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	rejected, total := 0, 0
	for i := 0; i < 120; i++ {
		s := scenes.Random(r, 0.3)
		img, err := scenes.Render(s, 128, r)
		if err != nil {
			t.Fatal(err)
		}
		wrong := s
		wrong.Objects = append([]scenes.Object(nil), s.Objects...)
		switch i % 3 {
		case 0: // background colour
			for _, c := range scenes.Palette() {
				if c.Name != s.Background && c.Name != s.Objects[0].Colour {
					wrong.Background = c.Name
					break
				}
			}
		case 1: // object shape
			for _, sh := range scenes.Shapes() {
				if sh != s.Objects[0].Shape {
					wrong.Objects[0].Shape = sh
					break
				}
			}
		case 2: // object colour
			for _, c := range scenes.Palette() {
				if c.Name != s.Background && c.Name != s.Objects[0].Colour {
					wrong.Objects[0].Colour = c.Name
					break
				}
			}
		}
		total++
		if !JudgeScene(wrong, img).Pass {
			rejected++
		}
	}
	if float64(rejected)/float64(total) < 0.97 {
		t.Fatalf("judge rejected only %d of %d wrong captions", rejected, total)
	}
}

func TestJudgeCaptionErrors(t *testing.T) {
	img, _ := scenes.Render(scenes.Scene{Background: "blue", Objects: []scenes.Object{{Colour: "red", Shape: "circle"}}}, 64, rand.New(rand.NewPCG(1, 1)))
	for _, c := range []string{"", "a red", "a red blob on a blue background", "a red circle on a mauve background", "a red circle on a blue background now"} {
		if _, err := Judge(c, img); err == nil {
			t.Errorf("caption %q: no error", c)
		}
	}
	v, err := Judge("a red circle on a blue background", img)
	if err != nil || !v.Pass {
		t.Fatalf("plain caption: %v %v", v, err)
	}
}
