// Package sdk is the guest SDK for Kiln pre- and post-processing nodes
// written in Go and compiled with GOOS=wasip1 GOARCH=wasm
// -buildmode=c-shared. A node exports one function per hook and hands the
// raw pointer and length to the SDK with a plain Go function:
//
//	//go:wasmexport kiln_node_post
//	func post(ptr, n int32) int64 { return sdk.Post(ptr, n, invert) }
//
//	func invert(in *sdk.PostInput) (sdk.PostOutput, error) {
//		m := [20]float32{-1, 0, 0, 0, 255, 0, -1, 0, 0, 255, 0, 0, -1, 0, 255, 0, 0, 0, 1, 0}
//		err := sdk.ApplyColorMatrix(in.Image, &m)
//		return sdk.PostOutput{Image: in.Image}, err
//	}
//
//	func main() {}
//
// Pixel work goes through the host's native image operations (Resize,
// Crop, DrawText, Overlay, ApplyColorMatrix), which run at native speed
// on the guest's own memory; loops over pixels in the guest run far
// slower under the host's deadline checks. Outside a Wasm guest the same
// functions run the native implementations directly, so node code can be
// tested and reused natively (Kiln's built-in nodes are).
package sdk

import (
	"errors"

	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/guest"
	"github.com/kiln-project/kiln/wasmhost/imageops"
)

// Message types of the node hooks, re-exported from the ABI.
type (
	// PreInput is the input of a pre-processing node.
	PreInput = abi.PreInput
	// PreOutput is the answer of a pre-processing node.
	PreOutput = abi.PreOutput
	// PostInput is the input of a post-processing node.
	PostInput = abi.PostInput
	// PostOutput is the answer of a post-processing node.
	PostOutput = abi.PostOutput
	// Image is an RGBA image; its pixels may live in the input buffer.
	Image = abi.Image
	// Param is one node parameter.
	Param = abi.Param
)

// Filter selects the resampling kernel of Resize.
type Filter int32

// The resampling filters.
const (
	Linear  Filter = Filter(imageops.Linear)
	Nearest Filter = Filter(imageops.Nearest)
)

// Color is a non-premultiplied RGBA colour packed as 0xRRGGBBAA.
type Color uint32

// RGBA packs a colour.
func RGBA(r, g, b, a uint8) Color {
	return Color(uint32(r)<<24 | uint32(g)<<16 | uint32(b)<<8 | uint32(a))
}

// ParamValue returns the value of a node parameter and whether it was given.
func ParamValue(ps []Param, key string) (string, bool) { return abi.ParamValue(ps, key) }

// NewImage returns a w×h image with zeroed (transparent) pixels.
func NewImage(w, h uint32) (Image, error) {
	if w == 0 || h == 0 || w > abi.MaxImageSide || h > abi.MaxImageSide || uint64(w)*uint64(h) > abi.MaxImagePixels {
		return Image{}, errors.New("sdk: invalid image size")
	}
	return Image{Width: w, Height: h, Pix: make([]byte, 4*int(w)*int(h))}, nil
}

// Resize returns src resampled to w×h.
func Resize(src Image, w, h uint32, f Filter) (Image, error) {
	dst, err := NewImage(w, h)
	if err != nil {
		return Image{}, err
	}
	if err := src.Check(); err != nil {
		return Image{}, err
	}
	return dst, resize(src, dst, f)
}

// Crop returns the w×h rectangle of src whose top-left corner is (x, y).
func Crop(src Image, x, y, w, h uint32) (Image, error) {
	dst, err := NewImage(w, h)
	if err != nil {
		return Image{}, err
	}
	if err := src.Check(); err != nil {
		return Image{}, err
	}
	return dst, crop(src, dst, x, y)
}

// DrawText draws text into im in place with the host's bitmap font at an
// integer scale, its top-left corner at (x, y); when bg is not fully
// transparent a box with pad pixels of margin is drawn behind it.
func DrawText(im Image, x, y int32, text string, scale, pad int32, fg, bg Color) error {
	if err := im.Check(); err != nil {
		return err
	}
	return drawText(im, x, y, text, scale, pad, fg, bg)
}

// Overlay composites src over dst in place at (x, y) with its alpha scaled
// by opacity (0..1).
func Overlay(dst, src Image, x, y int32, opacity float32) error {
	if err := dst.Check(); err != nil {
		return err
	}
	if err := src.Check(); err != nil {
		return err
	}
	return overlay(dst, src, x, y, opacity)
}

// ApplyColorMatrix transforms im in place by a 4×5 row-major matrix over
// (R, G, B, A, 1) with channels in 0..255.
func ApplyColorMatrix(im Image, m *[20]float32) error {
	if err := im.Check(); err != nil {
		return err
	}
	return colorMatrix(im, m)
}

// TextSize returns the size in pixels of text drawn at scale.
func TextSize(text string, scale int) (w, h int) { return imageops.TextSize(text, scale) }

// Grayscale returns the colour matrix that blends towards Rec. 709 luma by
// amount (0..1).
func Grayscale(amount float32) [20]float32 { return imageops.Grayscale(amount) }

// Log writes msg to the host's (rate-limited) log at an slog level.
func Log(level int, msg string) { guest.Log(level, msg) }

// Count adds delta to the module's named counter.
func Count(name string, delta int64) { guest.Count(name, delta) }
