package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// loraToy is one linear (16←8) and one 3×3 convolution (6←4) layer.
type loraToy struct {
	ws   *nn.Weights
	lin  *nn.Linear
	conv *nn.Conv2D
}

func (m *loraToy) Modules() []nn.Module                      { return m.ws.Modules() }
func (m *loraToy) SetAdapter(name string, a nn.Adapter) bool { return m.ws.SetAdapter(name, a) }

func newLoRAToy(t *testing.T, be backend.Backend, src safetensors.Source) *loraToy {
	ws := nn.NewWeights()
	m := &loraToy{ws: ws, lin: nn.NewLinear(ws, "lin", 8, 16, true), conv: nn.NewConv2D(ws, "conv", 4, 6, 3, backend.SymmetricPad(1, 1))}
	if err := ws.Load(be, src); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLoRARowsMatchCPU runs a mixed batch (LoRA A, LoRA B at another
// weight, none) through the per-row adapters on every CUDA target: the
// gathered and scattered rows (Reshape, ImageToTokens, Linear,
// TokensToImage on channels-last images) must equal the CPU reference.
func TestLoRARowsMatchCPU(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 1))
	base, err := safetensors.NewMemory([]safetensors.WriteTensor{
		safetensors.F32Tensor("lin.weight", []int{16, 8}, randData(r, 128, 0.3)),
		safetensors.F32Tensor("lin.bias", []int{16}, randData(r, 16, 0.3)),
		safetensors.F32Tensor("conv.weight", []int{6, 4, 3, 3}, randData(r, 216, 0.3)),
		safetensors.F32Tensor("conv.bias", []int{6}, randData(r, 6, 0.3)),
	})
	if err != nil {
		t.Fatal(err)
	}
	mkLoRA := func(rank int) safetensors.Source {
		src, err := safetensors.NewMemory([]safetensors.WriteTensor{
			safetensors.F32Tensor("unet.lin.lora_A.weight", []int{rank, 8}, randData(r, rank*8, 0.5)),
			safetensors.F32Tensor("unet.lin.lora_B.weight", []int{16, rank}, randData(r, 16*rank, 0.5)),
			safetensors.F32Tensor("unet.conv.lora_A.weight", []int{rank, 4, 3, 3}, randData(r, rank*36, 0.5)),
			safetensors.F32Tensor("unet.conv.lora_B.weight", []int{6, rank, 1, 1}, randData(r, 6*rank, 0.5)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	srcA, srcB := mkLoRA(2), mkLoRA(3)
	xl, xc := randData(r, 3*5*8, 1), randData(r, 3*4*6*6, 1)
	run := func(be backend.Backend) (lin, conv []float32) {
		m := newLoRAToy(t, be, base)
		mods := lora.Modules{lora.UNet: m.Modules()}
		a, err := lora.Parse(srcA, mods)
		if err != nil {
			t.Fatal(err)
		}
		b, err := lora.Parse(srcB, mods)
		if err != nil {
			t.Fatal(err)
		}
		remove, err := lora.Install(m, lora.UNet, []lora.Rows{
			{From: 0, To: 1, Uses: []lora.Use{{Name: "a", LoRA: a, UNet: 1}}},
			{From: 1, To: 2, Uses: []lora.Use{{Name: "b", LoRA: b, UNet: 0.5}, {Name: "a", LoRA: a, UNet: -0.5}}},
		}, false)
		if err != nil {
			t.Fatal(err)
		}
		defer remove()
		lin = be.ToFloat32(m.lin.Forward(be, be.FromFloat32(tensor.Shape{3, 5, 8}, xl)))
		conv = be.ToFloat32(m.conv.Forward(be, be.FromFloat32(tensor.Shape{3, 4, 6, 6}, xc)))
		return lin, conv
	}
	wl, wc := run(cpu.New())
	for _, tg := range targets(t) {
		gl, gc := run(tg.be)
		if e := fixtures.RelErr(gl, wl); e > tg.tol {
			t.Errorf("%s: linear rows differ from the CPU by %.3g", tg.name, e)
		}
		if e := fixtures.RelErr(gc, wc); e > tg.tol {
			t.Errorf("%s: conv rows differ from the CPU by %.3g", tg.name, e)
		}
	}
}
