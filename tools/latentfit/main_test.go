package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/family"
)

// TestBuiltinMapIsFitted checks that the built-in model ships the map a
// fit of its VAE gives, and that the map beats SD 1.x's on its images.
func TestBuiltinMapIsFitted(t *testing.T) {
	dir := filepath.Join("..", "..", "models", "kiln-shapes")
	got, rms, sd1, err := fit(context.Background(), dir, 48, 128, 1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, family.LatentRGBFile))
	if err != nil {
		t.Fatal(err)
	}
	var shipped family.LatentRGB
	if err := json.Unmarshal(data, &shipped); err != nil {
		t.Fatal(err)
	}
	for c := range got.Factors {
		for k := 0; k < 3; k++ {
			if math.Abs(got.Factors[c][k]-shipped.Factors[c][k]) > 2e-3 || math.Abs(got.Bias[k]-shipped.Bias[k]) > 2e-3 {
				t.Fatalf("shipped %+v, fitted %+v (rerun go run ./tools/latentfit)", shipped, got)
			}
		}
	}
	if !(rms < 0.75*sd1) {
		t.Fatalf("fitted map error %.3f is not well below SD 1.x's %.3f", rms, sd1)
	}
}
