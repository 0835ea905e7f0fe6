package safetensors

import (
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestOpenEveryFixture opens every safetensors file under ../shared/fixtures
// and reads every tensor through the typed helpers.
func TestOpenEveryFixture(t *testing.T) {
	root := fixtures.Require(t, ".")
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".safetensors") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 5 {
		t.Fatalf("found only %d safetensors fixtures: %v", len(paths), paths)
	}
	for _, p := range paths {
		t.Run(strings.TrimPrefix(p, root), func(t *testing.T) {
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			names := f.Names()
			if len(names) == 0 {
				t.Fatal("no tensors")
			}
			for _, n := range names {
				info, _ := f.Info(n)
				switch info.DType {
				case "F32", "F16", "BF16", "F64":
					v, shape, err := Float32(f, n)
					if err != nil {
						t.Fatal(err)
					}
					if len(v) != info.Numel() || len(shape) != len(info.Shape) {
						t.Fatalf("%s: %d values for shape %v", n, len(v), shape)
					}
					for _, x := range v {
						if math.IsNaN(float64(x)) {
							t.Fatalf("%s holds NaN", n)
						}
					}
				case "I64", "I32":
					v, _, err := Int64(f, n)
					if err != nil {
						t.Fatal(err)
					}
					if len(v) != info.Numel() {
						t.Fatalf("%s: %d values", n, len(v))
					}
				default:
					t.Fatalf("%s: unexpected dtype %s", n, info.DType)
				}
			}
		})
	}
}

// TestFixtureKnownValues checks a few tensors of the fixtures against facts
// the README states (ids padded with <|endoftext|>, the UNet's conv_in shape).
func TestFixtureKnownValues(t *testing.T) {
	ref := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	f, err := Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, shape, err := Int64(f, "tok/input_ids")
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[1] != 77 || ids[0] != 49406 || ids[len(ids)-1] != 49407 {
		t.Fatalf("tok/input_ids: shape %v, first %d, last %d", shape, ids[0], ids[len(ids)-1])
	}
	unet := fixtures.Require(t, "sd15-tiny/model/unet/diffusion_pytorch_model.safetensors")
	u, err := Open(unet)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	info, ok := u.Info("conv_in.weight")
	if !ok || info.DType != "F32" || len(info.Shape) != 4 || info.Shape[0] != 32 || info.Shape[1] != 4 {
		t.Fatalf("conv_in.weight: %+v %v", info, ok)
	}
}
