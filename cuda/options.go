package cuda

import (
	"os"
	"strconv"
)

func getenv(k string) string { return os.Getenv(k) }

// fromEnv applies KILN_CUDA_* overrides.
func (o *Options) fromEnv(get func(string) string) {
	if v := get("KILN_CUDA_GRAPHS"); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			o.Graphs = b
		}
	}
	if v := get("KILN_CUDA_SPECULATE"); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			o.Speculate = b
		}
	}
	if v := get("KILN_CUDA_FUSE"); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			o.Fuse = b
		}
	}
	if v := get("KILN_CUDA_CONV"); v != "" {
		o.Conv = v
	}
	if v := get("KILN_CUDA_ATTENTION"); v != "" {
		o.Attention = v
	}
	if v := get("KILN_CUDA_SM90A"); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			o.SM90A = b
		}
	}
	if v := get("KILN_CUDA_SM90A_IMAGE"); v != "" {
		o.SM90AImage = v
	}
	if v := get("KILN_CUDA_GROUPNORM"); v != "" {
		o.GroupNorm = v
	}
	if v := get("KILN_CUDA_PRECISION"); v != "" {
		o.Precision = v
	}
	if v := get("KILN_CUDA_LINEAR"); v != "" {
		o.Linear = v
	}
}
