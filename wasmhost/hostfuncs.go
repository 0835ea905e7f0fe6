package wasmhost

import (
	"context"
	"encoding/binary"
	"image"
	"image/color"
	"math"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/imageops"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// MaxHostImagePixels bounds the images the host's image functions accept
// (4096×4096), which bounds the host memory a guest can make them use.
const MaxHostImagePixels = 4096 * 4096

// Limits of the logging and counter functions.
const (
	maxLogLine      = 512
	maxCounterName  = 64
	maxCounterNames = 32
	maxTextBytes    = 4 << 10
)

// Result codes of the image functions.
const (
	imgOK       = 0
	imgBadArgs  = 1 // pointers outside memory, sizes out of range
	imgOpFailed = 2 // the operation refused its parameters
)

func kilnFuncs() []hostFunc {
	return []hostFunc{
		{"log", []api.ValueType{i32, i32, i32}, nil, hostLog},
		{"counter_add", []api.ValueType{i32, i32, i64}, nil, hostCounterAdd},
		{"image_resize", []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}, hostImageResize},
		{"image_crop", []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}, hostImageCrop},
		{"image_draw_text", []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}, hostImageDrawText},
		{"image_overlay", []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, f32}, []api.ValueType{i32}, hostImageOverlay},
		{"image_color_matrix", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, hostImageColorMatrix},
	}
}

func instantiateKiln(ctx context.Context, rt wazero.Runtime, _ *Host) error {
	return instantiateHostModule(ctx, rt, abi.HostModule, kilnFuncs())
}

func hostLog(ctx context.Context, m api.Module, stack []uint64) {
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	if n > maxLogLine {
		n = maxLogLine
	}
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		return
	}
	if st := callStateFrom(ctx); st != nil {
		st.module.guestLog(int(level), string(b))
	}
}

func validCounterName(b []byte) bool {
	if len(b) == 0 || len(b) > maxCounterName {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func hostCounterAdd(ctx context.Context, m api.Module, stack []uint64) {
	ptr, n, delta := uint32(stack[0]), uint32(stack[1]), int64(stack[2])
	if n > maxCounterName {
		return
	}
	b, ok := m.Memory().Read(ptr, n)
	if !ok || !validCounterName(b) {
		return
	}
	if st := callStateFrom(ctx); st != nil {
		st.module.guestCount(string(b), delta)
	}
}

// view wraps w×h RGBA pixels at ptr in guest memory without copying.
func view(m api.Module, ptr, w, h uint32) (*image.NRGBA, bool) {
	if w == 0 || h == 0 || w > abi.MaxImageSide || h > abi.MaxImageSide || uint64(w)*uint64(h) > MaxHostImagePixels {
		return nil, false
	}
	b, ok := m.Memory().Read(ptr, 4*w*h)
	if !ok {
		return nil, false
	}
	im, err := imageops.New(int(w), int(h), b)
	return im, err == nil
}

func opResult(err error) uint64 {
	if err != nil {
		return imgOpFailed
	}
	return imgOK
}

func hostImageResize(_ context.Context, m api.Module, stack []uint64) {
	src, ok1 := view(m, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]))
	dst, ok2 := view(m, uint32(stack[3]), uint32(stack[4]), uint32(stack[5]))
	if !ok1 || !ok2 {
		stack[0] = imgBadArgs
		return
	}
	stack[0] = opResult(imageops.Resize(dst, src, imageops.Filter(int32(stack[6]))))
}

func hostImageCrop(_ context.Context, m api.Module, stack []uint64) {
	src, ok1 := view(m, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]))
	dst, ok2 := view(m, uint32(stack[3]), uint32(stack[6]), uint32(stack[7]))
	if !ok1 || !ok2 {
		stack[0] = imgBadArgs
		return
	}
	stack[0] = opResult(imageops.Crop(dst, src, int(int32(stack[4])), int(int32(stack[5]))))
}

func unpackColor(v uint32) color.NRGBA {
	return color.NRGBA{uint8(v >> 24), uint8(v >> 16), uint8(v >> 8), uint8(v)}
}

func hostImageDrawText(_ context.Context, m api.Module, stack []uint64) {
	im, ok := view(m, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]))
	textLen := uint32(stack[6])
	if !ok || textLen > maxTextBytes {
		stack[0] = imgBadArgs
		return
	}
	text, ok := m.Memory().Read(uint32(stack[5]), textLen)
	if !ok {
		stack[0] = imgBadArgs
		return
	}
	x, y := int(int32(stack[3])), int(int32(stack[4]))
	scale, pad := int(int32(stack[7])), int(int32(stack[8]))
	fg, bg := unpackColor(uint32(stack[9])), unpackColor(uint32(stack[10]))
	stack[0] = opResult(imageops.DrawText(im, x, y, string(text), scale, pad, fg, bg))
}

func hostImageOverlay(_ context.Context, m api.Module, stack []uint64) {
	dst, ok1 := view(m, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]))
	src, ok2 := view(m, uint32(stack[3]), uint32(stack[4]), uint32(stack[5]))
	if !ok1 || !ok2 {
		stack[0] = imgBadArgs
		return
	}
	x, y := int(int32(stack[6])), int(int32(stack[7]))
	stack[0] = opResult(imageops.Overlay(dst, src, x, y, api.DecodeF32(stack[8])))
}

func hostImageColorMatrix(_ context.Context, m api.Module, stack []uint64) {
	im, ok := view(m, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]))
	raw, ok2 := m.Memory().Read(uint32(stack[3]), 80)
	if !ok || !ok2 {
		stack[0] = imgBadArgs
		return
	}
	var cm imageops.ColorMatrix
	for i := range cm {
		cm[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	stack[0] = opResult(imageops.ApplyColorMatrix(im, &cm))
}
