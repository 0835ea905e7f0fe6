package cpu

// expScaleSum sets x[i] = e^(x[i]·scale − shift) and returns their sum;
// arguments below −87 count as −87 (a negligible, positive result).
// With vec it uses the assembly helper where the CPU has one.
func expScaleSum(x []float32, scale, shift float32, vec bool) float32 {
	var sum float32
	done := 0
	if vec {
		done, sum = expScaleVec(x, scale, shift)
	}
	for i := done; i < len(x); i++ {
		e := expf(max(x[i]*scale-shift, -87))
		x[i] = e
		sum += e
	}
	return sum
}

// maxf returns the largest element of a non-empty x.
func maxf(x []float32, vec bool) float32 {
	m := x[0]
	done := 0
	if vec {
		var v float32
		if done, v = maxVec(x); done > 0 {
			m = v
		}
	}
	for _, v := range x[done:] {
		m = max(m, v)
	}
	return m
}

// sigmul sets dst[i] = src[i]·sigmoid(alpha·src[i]).
func sigmul(dst, src []float32, alpha float32, vec bool) {
	done := 0
	if vec {
		done = sigmulVec(dst, src, alpha)
	}
	for i := done; i < len(src); i++ {
		v := src[i]
		dst[i] = v / (1 + expf(-alpha*v))
	}
}

// geluMul sets dst[i] = GELU(x[i])·m[i], or GELU(x[i]) when m is nil.
func geluMul(dst, x, m []float32, vec bool) {
	done := 0
	if vec {
		done = geluMulVec(dst, x, m)
	}
	for i := done; i < len(x); i++ {
		g := geluf(x[i])
		if m != nil {
			g *= m[i]
		}
		dst[i] = g
	}
}
