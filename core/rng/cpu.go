package rng

import "math"

// CPU reproduces torch's CPU generator (torch.Generator("cpu")) and the way
// torch.randn fills a float32 tensor from it:
//
//   - the engine is mt19937 seeded with the low 32 bits of the seed;
//   - fewer than 16 elements: each element comes from a double-precision
//     Box–Muller transform of two 53-bit uniforms, which yields two normals;
//     the second is cached in the generator and returned by the next draw;
//   - 16 or more elements: all n uniforms (24-bit floats) are drawn first,
//     then transformed in place in blocks of 16 — element j of a block pairs
//     with element j+8: radius from the first, angle from the second, cosine
//     into the first slot and sine into the second. When n is not a multiple
//     of 16, 16 fresh uniforms overwrite the last 16 slots and that block is
//     transformed again.
type CPU struct {
	mt         mt19937
	cached     float64
	haveCached bool
}

// NewCPU returns the CPU generator as torch.Generator("cpu").manual_seed(seed)
// leaves it.
func NewCPU(seed uint64) *CPU {
	g := &CPU{}
	g.mt.seed(uint32(seed))
	return g
}

// Randn draws n standard normal samples as torch.randn(n) does.
func (g *CPU) Randn(n int) []float32 {
	out := make([]float32, n)
	if n <= 0 {
		return out
	}
	if n < 16 {
		for i := range out {
			out[i] = float32(g.normalDouble())
		}
		return out
	}
	for i := range out {
		out[i] = g.uniformFloat()
	}
	for i := 0; i+16 <= n; i += 16 {
		boxMuller16(out[i : i+16])
	}
	if n%16 != 0 {
		tail := out[n-16:]
		for i := range tail {
			tail[i] = g.uniformFloat()
		}
		boxMuller16(tail)
	}
	return out
}

// Rand draws n samples uniform on [0, 1) as torch.rand(n) does for float32.
func (g *CPU) Rand(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = g.uniformFloat()
	}
	return out
}

// uniformFloat is torch's uniform_real_distribution<float>(0, 1): the low 24
// bits of one 32-bit draw scaled by 2^-24.
func (g *CPU) uniformFloat() float32 {
	return float32(g.mt.next()&(1<<24-1)) * (1.0 / (1 << 24))
}

// uniformDouble is torch's uniform_real_distribution<double>(0, 1): a 64-bit
// value made of two draws (the first is the high word), low 53 bits scaled
// by 2^-53.
func (g *CPU) uniformDouble() float64 {
	hi := uint64(g.mt.next())
	lo := uint64(g.mt.next())
	return float64((hi<<32|lo)&(1<<53-1)) * (1.0 / (1 << 53))
}

// normalDouble is torch's normal_distribution<double>: Box–Muller with the
// sine half cached for the next call.
func (g *CPU) normalDouble() float64 {
	if g.haveCached {
		g.haveCached = false
		return g.cached
	}
	u1 := g.uniformDouble()
	u2 := g.uniformDouble()
	r := math.Sqrt(-2 * math.Log1p(-u2))
	theta := 2 * math.Pi * u1
	g.cached = r * math.Sin(theta)
	g.haveCached = true
	return r * math.Cos(theta)
}

// boxMuller16 transforms 16 uniforms into 16 normals in place, in float32
// arithmetic as torch's vectorised path does (transcendentals are evaluated
// in float64 and rounded, within an ulp of torch's float polynomials).
func boxMuller16(d []float32) {
	const twoPi = float32(2 * math.Pi)
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		radius := float32(math.Sqrt(float64(float32(-2) * float32(math.Log(float64(u1))))))
		theta := twoPi * u2
		s, c := math.Sincos(float64(theta))
		d[j] = radius * float32(c)
		d[j+8] = radius * float32(s)
	}
}
