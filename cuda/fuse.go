package cuda

import (
	"strings"

	"github.com/kiln-project/kiln/cuda/internal/cublas"
)

// fuseResiduals folds residual additions into the op that makes one of
// their operands: an add kernel whose operand O is made by Kiln's
// implicit-GEMM kernel, or by a bias kernel (after cuBLAS or cuDNN), and read
// by nothing else becomes that kernel's residual input, so the sum is
// written in the same pass. The other operand must be complete before the
// producing kernel runs. It returns the number of additions removed.
func fuseResiduals(seg *segment) int {
	writers := make(map[*buffer][]int)
	readers := make(map[*buffer]int)
	for i, r := range seg.recs {
		if r.writes != nil {
			writers[r.writes] = append(writers[r.writes], i)
		}
		for _, b := range r.reads {
			readers[b]++
		}
	}
	removed := make([]bool, len(seg.recs))
	n := 0
	for i2, r2 := range seg.recs {
		if r2.kind != recKernel || !strings.HasPrefix(r2.kernel, "add_") || strings.HasPrefix(r2.kernel, "add_bcast") {
			continue
		}
		dt := strings.TrimPrefix(r2.kernel, "add_")
		z, a, b := r2.args[0].buf, r2.args[1], r2.args[2]
		if a.buf == b.buf || a.off != 0 || b.off != 0 {
			continue
		}
		for _, pick := range [2][2]arg{{a, b}, {b, a}} {
			o, y := pick[0].buf, pick[1].buf
			if o.seg != seg || o.refs > 0 || readers[o] != 1 || len(writers[o]) == 0 {
				continue
			}
			i1 := writers[o][len(writers[o])-1]
			if i1 >= i2 || removed[i1] {
				continue
			}
			r1 := seg.recs[i1]
			resArg := -1
			switch {
			case r1.kind == recKernel && !strings.HasSuffix(r1.kernel, "_"+dt):
			case r1.kind == recKernel && strings.HasPrefix(r1.kernel, "conv_") && r1.args[4].buf == nil:
				resArg = 4
			case r1.kind == recKernel && strings.HasPrefix(r1.kernel, "bias_act_") && r1.args[3].buf == nil && r1.args[6].v == 0:
				resArg = 3
			case (r1.kind == recLt || r1.kind == recCudnn && r1.gbias.buf != nil) && r1.gz.buf == nil && dtypeName(r1) == dt:
				resArg = 100 // C of the product, z of the fused convolution
			}
			if resArg < 0 {
				continue
			}
			ready := true
			if y.seg == seg {
				for _, w := range writers[y] {
					if w >= i1 {
						ready = false
					}
				}
			}
			if !ready {
				continue
			}
			// r1 now writes z = its result + y; o stays an input of an
			// in-place bias kernel, and is otherwise left unwritten.
			if resArg == 100 {
				r1.gz = bufRef{buf: y}
				r1.gc = bufRef{buf: z}
				r1.beta = 1
				r1.writes = z
				r1.reads = append(r1.reads, y)
			} else {
				r1.args[0] = pbuf(z)
				r1.args[resArg] = pbuf(y)
				r1.writes = z
				var reads []*buffer
				for _, a := range r1.args[1:] {
					if a.buf != nil {
						reads = append(reads, a.buf)
					}
				}
				r1.reads = reads
			}
			removed[i2] = true
			n++
			break
		}
	}
	if n == 0 {
		return 0
	}
	out := seg.recs[:0]
	for i, r := range seg.recs {
		if !removed[i] {
			out = append(out, r)
		}
	}
	seg.recs = out
	return n
}

// dtypeName names the element type of a library record as kernel names do.
func dtypeName(r *record) string {
	if r.kind == recLt {
		switch r.lt.Type {
		case cublas.R16F:
			return "f16"
		case cublas.R16BF:
			return "bf16"
		}
		return "f32"
	}
	return suffix(tensorOf(r.dnn.DataType))[1:]
}
