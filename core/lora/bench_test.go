package lora

import (
	"math/rand/v2"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

// BenchmarkLinearRows times one SD 1.5 attention projection (320→320) over
// 16 rows of 1024 tokens (8 jobs with guidance at 256²) on the CPU: without
// LoRAs, with one rank-32 LoRA shared by all rows, and with 8 different
// ones (one per job: gathered and scattered rows).
func BenchmarkLinearRows(b *testing.B) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(1, 1))
	ws := nn.NewWeights()
	lin := nn.NewLinear(ws, "proj", 320, 320, true)
	src, err := safetensors.NewMemory([]safetensors.WriteTensor{
		safetensors.F32Tensor("proj.weight", []int{320, 320}, randVec(r, 320*320)),
		safetensors.F32Tensor("proj.bias", []int{320}, randVec(r, 320)),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := ws.Load(be, src); err != nil {
		b.Fatal(err)
	}
	target := &weightsTarget{ws}
	var loras []*LoRA
	for k := 0; k < 8; k++ {
		s, err := safetensors.NewMemory([]safetensors.WriteTensor{
			safetensors.F32Tensor("unet.proj.lora_A.weight", []int{32, 320}, randVec(r, 32*320)),
			safetensors.F32Tensor("unet.proj.lora_B.weight", []int{320, 32}, randVec(r, 320*32)),
		})
		if err != nil {
			b.Fatal(err)
		}
		l, err := Parse(s, Modules{UNet: ws.Modules()})
		if err != nil {
			b.Fatal(err)
		}
		loras = append(loras, l)
	}
	x := be.FromFloat32(tensor.Shape{16, 1024, 320}, randVec(r, 16*1024*320))
	for _, c := range []struct {
		name string
		rows func(job int) []Use
	}{
		{"none", func(int) []Use { return nil }},
		{"shared", func(int) []Use { return []Use{{LoRA: loras[0], UNet: 1}} }},
		{"mixed8", func(j int) []Use { return []Use{{LoRA: loras[j], UNet: 1}} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var rows []Rows
			for j := 0; j < 8; j++ {
				if u := c.rows(j); u != nil {
					rows = append(rows, Rows{From: 2 * j, To: 2*j + 2, Uses: u})
				}
			}
			remove, err := Install(target, UNet, rows, false)
			if err != nil {
				b.Fatal(err)
			}
			defer remove()
			for b.Loop() {
				be.Free(lin.Forward(be, x))
			}
		})
	}
}

// weightsTarget adapts nn.Weights to Target.
type weightsTarget struct{ ws *nn.Weights }

func (w *weightsTarget) Modules() []nn.Module                      { return w.ws.Modules() }
func (w *weightsTarget) SetAdapter(name string, a nn.Adapter) bool { return w.ws.SetAdapter(name, a) }
