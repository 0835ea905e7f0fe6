package rng

import "math"

// Philox reproduces torch.randn on a CUDA generator
// (torch.Generator("cuda").manual_seed(seed)) on the host, the way
// AUTOMATIC1111 does: element i of the k-th draw is the first normal of
// curand's Box–Muller pair taken from one Philox4x32-10 block with key =
// the 64-bit seed (low word first) and counter = (k, 0, i mod 2^32, i>>32).
// This matches torch as long as one kernel thread produces each element,
// which holds for tensors up to the GPU's resident thread count (over
// 200 000 elements on current GPUs, far more than a latent needs).
type Philox struct {
	key    [2]uint32
	offset uint32
}

// NewPhilox returns the CUDA-compatible generator for seed.
func NewPhilox(seed uint64) *Philox {
	return &Philox{key: [2]uint32{uint32(seed), uint32(seed >> 32)}}
}

// Philox4x32 constants (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011).
const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// philox4x32 runs the ten rounds of Philox4x32 on one counter block.
func philox4x32(ctr [4]uint32, key [2]uint32) [4]uint32 {
	k0, k1 := key[0], key[1]
	for r := 0; r < 10; r++ {
		if r > 0 {
			k0 += philoxW0
			k1 += philoxW1
		}
		p0 := uint64(philoxM0) * uint64(ctr[0])
		p1 := uint64(philoxM1) * uint64(ctr[2])
		ctr = [4]uint32{
			uint32(p1>>32) ^ ctr[1] ^ k0,
			uint32(p1),
			uint32(p0>>32) ^ ctr[3] ^ k1,
			uint32(p0),
		}
	}
	return ctr
}

// curand's Box–Muller scale factors: 2^-32 and 2^-32·2π in float32.
const (
	twoPow32Inv    = float32(2.3283064e-10)
	twoPow32Inv2Pi = float32(2.3283064e-10 * 6.2831855)
)

// Randn draws n standard normal samples as torch.randn(n, device="cuda").
func (g *Philox) Randn(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		x := philox4x32([4]uint32{g.offset, 0, uint32(i), uint32(uint64(i) >> 32)}, g.key)
		u := float32(x[0])*twoPow32Inv + twoPow32Inv/2
		v := float32(x[1])*twoPow32Inv2Pi + twoPow32Inv2Pi/2
		s := float32(math.Sqrt(float64(float32(-2) * float32(math.Log(float64(u))))))
		out[i] = s * float32(math.Sin(float64(v)))
	}
	g.offset++
	return out
}
