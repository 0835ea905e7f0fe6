package cuda

import "testing"

// TestGroupNormPlan checks which group norms of the SD 1.5 UNet and VAE at
// 512² run as one gn_fused pass on an H100/H200-like device, and that
// KILN_CUDA_GROUPNORM=3pass turns the pass off.
func TestGroupNormPlan(t *testing.T) {
	d := &Device{info: Info{SMs: 132, MaxSharedOpt: 227 << 10}, opts: DefaultOptions()}
	d.opts.GroupNorm = "auto"
	cases := []struct {
		bn, hw, c, groups, esize int
		fused                    bool
		gpb                      int
	}{
		{2, 64 * 64, 320, 32, 2, true, 1},    // UNet 64², batch 1 with CFG
		{32, 64 * 64, 640, 32, 2, true, 1},   // 160 KiB slabs: one block per SM
		{2, 64 * 64, 960, 32, 2, false, 0},   // 240 KiB: three passes
		{32, 64 * 64, 320, 32, 2, true, 1},   // 80 KiB slabs, 1024 blocks (faster in the UNet step than 3 passes)
		{2, 64 * 64, 640, 32, 2, true, 1},    // up block concat, 160 KiB slab, 64 blocks
		{32, 16 * 16, 1280, 32, 2, true, 2},  // 40 KiB slabs: one pass at any grid
		{2, 8 * 8, 1280, 32, 2, true, 1},     // 64 blocks: gpb stays 1
		{32, 8 * 8, 1280, 32, 2, true, 2},    // 512 blocks; gpb 4 would leave 256 < 2·132
		{1, 512 * 512, 128, 32, 2, false, 0}, // VAE at full size
		{2, 64 * 64, 320, 32, 4, true, 1},    // float32 still fits
		{1, 4, 4096, 1, 2, false, 0},         // 4096 channels per group
	}
	for _, c := range cases {
		gpb, threads, smem, ok := d.gnFusedPlan(c.bn, c.hw, c.c, c.groups, c.esize)
		if ok != c.fused || (ok && gpb != c.gpb) {
			t.Errorf("plan(%+v) = gpb %d, ok %v; want %v, gpb %d", c, gpb, ok, c.fused, c.gpb)
			continue
		}
		if ok && (threads < gpb*c.c/c.groups || smem > 227<<10 || smem < c.hw*gpb*c.c/c.groups*c.esize) {
			t.Errorf("plan(%+v): %d threads, %d bytes of shared memory", c, threads, smem)
		}
	}
	d.opts.GroupNorm = "3pass"
	if _, _, _, ok := d.gnFusedPlan(2, 64*64, 320, 32, 2); ok {
		t.Error("GroupNorm=3pass still plans the one-pass kernel")
	}
}
