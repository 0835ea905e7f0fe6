package unet

import (
	"context"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// loadFixture opens the sd15-tiny UNet and the reference tensors.
func loadFixture(t testing.TB) (*Model, *safetensors.File) {
	t.Helper()
	cfg, w := fixtureSource(t)
	refPath := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	m, err := New(cpu.New(), cfg, w)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(refPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	return m, ref
}

func refTensor(t testing.TB, ref safetensors.Source, name string) ([]float32, []int) {
	t.Helper()
	v, shape, err := safetensors.Float32(ref, name)
	if err != nil {
		t.Fatalf("reference %s: %v", name, err)
	}
	return v, shape
}

func TestFixtureForward(t *testing.T) {
	m, ref := loadFixture(t)
	sample, sshape := refTensor(t, ref, "unet/in_sample")
	ts, _ := refTensor(t, ref, "unet/in_timesteps")
	cond, cshape := refTensor(t, ref, "unet/in_context")
	shape := [4]int{sshape[0], sshape[1], sshape[2], sshape[3]}
	for _, tc := range []struct {
		name string
		ts   []float32
		want string
	}{
		{"per-sample timesteps", ts, "unet/out"},
		{"scalar timestep", []float32{250}, "unet/out_scalar_t"},
		{"scalar timestep repeated", []float32{250, 250}, "unet/out_scalar_t"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Forward(context.Background(), sample, shape, tc.ts, cond, cshape[1])
			if err != nil {
				t.Fatal(err)
			}
			want, _ := refTensor(t, ref, tc.want)
			if e := fixtures.RelErr(got, want); e > 1e-4 {
				t.Fatalf("relative error %.3g > 1e-4", e)
			} else {
				t.Logf("relative error %.3g", e)
			}
		})
	}
}
