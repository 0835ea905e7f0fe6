package kernels

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageIsFresh fails when a kernel source changed without rebuilding the
// committed image (or the image was replaced without recording it).
func TestImageIsFresh(t *testing.T) {
	if err := CheckFresh("."); err != nil {
		t.Fatal(err)
	}
}

// TestStaleSourcesAreCaught edits a copy of the sources and checks that the
// freshness check notices.
func TestStaleSourcesAreCaught(t *testing.T) {
	dir := t.TempDir()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckFresh(dir); err != nil {
		t.Fatalf("an unchanged copy should be fresh: %v", err)
	}
	p := filepath.Join(dir, "elementwise.cu")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, append(b, []byte("\n// edited\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	err = CheckFresh(dir)
	if err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("an edited source should make the image stale, got %v", err)
	}
}

// TestSourceHashMatchesScript checks that the Go hash and sourcehash.sh agree.
func TestSourceHashMatchesScript(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	out, err := exec.Command("bash", "sourcehash.sh").Output()
	if err != nil {
		t.Skipf("sourcehash.sh: %v", err)
	}
	got, err := SourceHash(".")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != got {
		t.Fatalf("script %s, Go %s", out, got)
	}
}

func TestNames(t *testing.T) {
	names := Names()
	if len(names) < 50 {
		t.Fatalf("only %d kernel names", len(names))
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	for _, n := range []string{"add_f16", "flash80_f16", "conv_128x128_bf16", "gn_apply_f32", "convert_f32_f16"} {
		if !seen[n] {
			t.Errorf("kernel %s missing from kernels.list", n)
		}
	}
}

// TestSM90AImageIsFresh fails when a committed Hopper image is older than
// its sources (or was replaced without recording it).
func TestSM90AImageIsFresh(t *testing.T) {
	if SM90A() == nil {
		t.Log("no Hopper image committed: only the portable image is used")
	}
	if err := CheckSM90AFresh("."); err != nil {
		t.Fatal(err)
	}
}

// TestSM90ASourceHashMatchesScript checks that the Go hash and
// sm90a/sourcehash.sh agree.
func TestSM90ASourceHashMatchesScript(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not installed")
	}
	out, err := exec.Command("bash", "sm90a/sourcehash.sh").Output()
	if err != nil {
		t.Skipf("sourcehash.sh: %v", err)
	}
	got, err := SM90ASourceHash(".")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != got {
		t.Fatalf("script %s, Go %s", out, got)
	}
}
