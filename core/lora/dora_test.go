package lora

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
)

// doraFile is a kohya LoRA of the toy model's linear layer with a
// dora_scale; PEFT-named when peft is set.
func doraFile(t testing.TB, seed uint64, rank int, alpha float32, peft bool) (src safetensors.Source, down, up, mag []float32) {
	r := rand.New(rand.NewPCG(seed, 9))
	down, up = randVec(r, rank*5), randVec(r, 6*rank)
	mag = make([]float32, 6)
	for i := range mag {
		mag[i] = 0.5 + r.Float32()*2
	}
	names := [4]string{"lora_unet_blk_lin.lora_down.weight", "lora_unet_blk_lin.lora_up.weight", "lora_unet_blk_lin.alpha", "lora_unet_blk_lin.dora_scale"}
	if peft {
		names = [4]string{"unet.blk.lin.lora_A.weight", "unet.blk.lin.lora_B.weight", "unet.blk.lin.alpha", "unet.blk.lin.lora_magnitude_vector.weight"}
	}
	magShape := []int{6, 1}
	if peft {
		magShape = []int{6}
	}
	src, err := safetensors.NewMemory([]safetensors.WriteTensor{
		safetensors.F32Tensor(names[0], []int{rank, 5}, down),
		safetensors.F32Tensor(names[1], []int{6, rank}, up),
		safetensors.F32Tensor(names[2], nil, []float32{alpha}),
		safetensors.F32Tensor(names[3], magShape, mag),
	})
	if err != nil {
		t.Fatal(err)
	}
	return src, down, up, mag
}

// doraReference is the DoRA paper's merged weight, written out from the
// formula: V = W + s·B·A, W' = m ⊙ V / ‖V‖ with the norm of each output
// row (PEFT's lora_magnitude_vector has one value per output feature).
func doraReference(w []float32, down, up, mag []float32, rank int, s float64) []float64 {
	const out, in = 6, 5
	v := make([]float64, out*in)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			ba := 0.0
			for k := 0; k < rank; k++ {
				ba += float64(up[o*rank+k]) * float64(down[k*in+i])
			}
			v[o*in+i] = float64(w[o*in+i]) + s*ba
		}
	}
	res := make([]float64, out*in)
	for o := 0; o < out; o++ {
		norm := 0.0
		for i := 0; i < in; i++ {
			norm += v[o*in+i] * v[o*in+i]
		}
		norm = math.Sqrt(norm)
		for i := 0; i < in; i++ {
			res[o*in+i] = float64(mag[o]) * v[o*in+i] / norm
		}
	}
	return res
}

// TestMergeDoRA checks Merge of weight-decomposed LoRAs (kohya dora_scale
// and PEFT lora_magnitude_vector) against the formula computed here, on the
// layer's output, at two weights, and that restore puts W back.
func TestMergeDoRA(t *testing.T) {
	be := cpu.New()
	m := newToy(t, be)
	w0 := be.ToFloat32(m.Weight("blk.lin"))
	bias := be.ToFloat32(m.ws.Tensor("blk.lin.bias"))
	r := rand.New(rand.NewPCG(8, 8))
	xl, xc := randVec(r, 2*2*5), randVec(r, 2*3*16)
	base, _ := m.forward(be, xl, xc, 2)
	for _, peft := range []bool{false, true} {
		const rank, alpha = 3, 2
		src, down, up, mag := doraFile(t, 11, rank, alpha, peft)
		l, err := Parse(src, m.modules())
		if err != nil {
			t.Fatal(err)
		}
		if !l.DoRA(UNet) || l.DoRA(TextEncoder) {
			t.Fatalf("DoRA not reported")
		}
		for _, weight := range []float32{1, 0.6} {
			restore, rest, err := Merge(be, m, UNet, []Use{{Name: "d", LoRA: l, UNet: weight}}, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(rest) != 0 {
				t.Fatalf("linear DoRA handed back: %+v", rest)
			}
			got, _ := m.forward(be, xl, xc, 2)
			restore()
			ref := doraReference(w0, down, up, mag, rank, float64(weight)*alpha/rank)
			worst := 0.0
			for row := 0; row < 4; row++ {
				for o := 0; o < 6; o++ {
					y := float64(bias[o])
					for i := 0; i < 5; i++ {
						y += ref[o*5+i] * float64(xl[row*5+i])
					}
					worst = max(worst, math.Abs(y-float64(got[row*6+o])))
				}
			}
			if worst > 1e-5 {
				t.Errorf("peft=%v weight %g: merged DoRA differs from the formula by %g", peft, weight, worst)
			}
			// the magnitude is applied: the merged rows' norms are m
			if d := maxDiff(got, base); d < 1e-3 {
				t.Errorf("DoRA merge changed nothing (%g)", d)
			}
		}
	}
	if bl, _ := m.forward(be, xl, xc, 2); maxDiff(bl, base) != 0 {
		t.Error("restore did not put the weights back")
	}
}
