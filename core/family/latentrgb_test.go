package family

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOwnLatentRGB checks reading a folder's own preview map: absent is
// no map, a good file is used as written, a wrong channel count or bad
// JSON is an error.
func TestOwnLatentRGB(t *testing.T) {
	dir := t.TempDir()
	if got, err := OwnLatentRGB(dir, 4); err != nil || got != nil {
		t.Fatalf("no file: %+v, %v", got, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "vae"), 0o755); err != nil {
		t.Fatal(err)
	}
	own := `{"factors": [[1,0,0],[0,1,0],[0,0,1],[0,0,0]], "bias": [0.5, 0, 0]}`
	if err := os.WriteFile(filepath.Join(dir, LatentRGBFile), []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := OwnLatentRGB(dir, 4); err != nil || got.Bias[0] != 0.5 || got.Factors[1][1] != 1 {
		t.Fatalf("own file: %+v, %v", got, err)
	}
	if _, err := OwnLatentRGB(dir, 3); err == nil {
		t.Fatal("a file with the wrong channel count was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, LatentRGBFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OwnLatentRGB(dir, 4); err == nil {
		t.Fatal("malformed JSON was accepted")
	}
}
