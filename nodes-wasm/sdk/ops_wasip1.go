//go:build wasip1

package sdk

import (
	"errors"
	"unsafe"
)

// Host image operations (module "kiln"). Each returns 0 on success or an
// error code; see docs/wasm-abi.md.

//go:wasmimport kiln image_resize
func hostResize(src unsafe.Pointer, sw, sh int32, dst unsafe.Pointer, dw, dh int32, filter int32) int32

//go:wasmimport kiln image_crop
func hostCrop(src unsafe.Pointer, sw, sh int32, dst unsafe.Pointer, x, y, w, h int32) int32

//go:wasmimport kiln image_draw_text
func hostDrawText(img unsafe.Pointer, w, h, x, y int32, text unsafe.Pointer, textLen, scale, pad int32, fg, bg uint32) int32

//go:wasmimport kiln image_overlay
func hostOverlay(dst unsafe.Pointer, dw, dh int32, src unsafe.Pointer, sw, sh, x, y int32, opacity float32) int32

//go:wasmimport kiln image_color_matrix
func hostColorMatrix(img unsafe.Pointer, w, h int32, m unsafe.Pointer) int32

func pix(im Image) unsafe.Pointer { return unsafe.Pointer(&im.Pix[0]) }

func hostErr(op string, code int32) error {
	switch code {
	case 0:
		return nil
	case 1:
		return errors.New(op + ": arguments outside guest memory or invalid sizes")
	default:
		return errors.New(op + ": the operation failed (bad parameters)")
	}
}

func resize(src, dst Image, f Filter) error {
	return hostErr("image_resize", hostResize(pix(src), int32(src.Width), int32(src.Height),
		pix(dst), int32(dst.Width), int32(dst.Height), int32(f)))
}

func crop(src, dst Image, x, y uint32) error {
	return hostErr("image_crop", hostCrop(pix(src), int32(src.Width), int32(src.Height),
		pix(dst), int32(x), int32(y), int32(dst.Width), int32(dst.Height)))
}

func drawText(im Image, x, y int32, text string, scale, pad int32, fg, bg Color) error {
	if len(text) == 0 {
		return nil
	}
	return hostErr("image_draw_text", hostDrawText(pix(im), int32(im.Width), int32(im.Height), x, y,
		unsafe.Pointer(unsafe.StringData(text)), int32(len(text)), scale, pad, uint32(fg), uint32(bg)))
}

func overlay(dst, src Image, x, y int32, opacity float32) error {
	return hostErr("image_overlay", hostOverlay(pix(dst), int32(dst.Width), int32(dst.Height),
		pix(src), int32(src.Width), int32(src.Height), x, y, opacity))
}

func colorMatrix(im Image, m *[20]float32) error {
	return hostErr("image_color_matrix", hostColorMatrix(pix(im), int32(im.Width), int32(im.Height), unsafe.Pointer(&m[0])))
}
