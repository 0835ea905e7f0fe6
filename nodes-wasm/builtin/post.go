package builtin

import (
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/nodes-wasm/sdk"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

func resize(in *abi.PostInput) (abi.Image, error) {
	src := in.Image
	sw, sh := uint64(src.Width), uint64(src.Height)
	w, err := paramUint(in.Params, "resize", "width", 0, 1, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	h, err := paramUint(in.Params, "resize", "height", 0, 1, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	scale, err := paramFloat(in.Params, "resize", "scale", 0, 0.01, 8)
	if err != nil {
		return abi.Image{}, err
	}
	switch {
	case w > 0 && h > 0:
	case w > 0:
		h = max(1, (sh*w+sw/2)/sw)
	case h > 0:
		w = max(1, (sw*h+sh/2)/sh)
	case scale > 0:
		w = max(1, uint64(float64(sw)*scale+0.5))
		h = max(1, uint64(float64(sh)*scale+0.5))
	default:
		return abi.Image{}, paramErr("resize", "width", "give width, height or scale")
	}
	if w > abi.MaxImageSide || h > abi.MaxImageSide || w*h > MaxOutputPixels {
		return abi.Image{}, paramErr("resize", "width", "result "+strconv.FormatUint(w, 10)+"×"+strconv.FormatUint(h, 10)+" is too large")
	}
	f := sdk.Linear
	switch v, _ := abi.ParamValue(in.Params, "filter"); v {
	case "", "linear":
	case "nearest":
		f = sdk.Nearest
	default:
		return abi.Image{}, paramErr("resize", "filter", "want linear or nearest, got "+strconv.Quote(v))
	}
	return sdk.Resize(src, uint32(w), uint32(h), f)
}

func crop(in *abi.PostInput) (abi.Image, error) {
	src := in.Image
	sw, sh := uint64(src.Width), uint64(src.Height)
	if a, ok := abi.ParamValue(in.Params, "aspect"); ok && a != "" {
		aw, ah, good := strings.Cut(a, ":")
		x, err1 := strconv.ParseUint(aw, 10, 16)
		y, err2 := strconv.ParseUint(ah, 10, 16)
		if !good || err1 != nil || err2 != nil || x == 0 || y == 0 {
			return abi.Image{}, paramErr("crop", "aspect", "want W:H, got "+strconv.Quote(a))
		}
		w, h := sw, sw*y/x
		if h > sh {
			w, h = sh*x/y, sh
		}
		w, h = max(w, 1), max(h, 1)
		return sdk.Crop(src, uint32((sw-w)/2), uint32((sh-h)/2), uint32(w), uint32(h))
	}
	x, err := paramUint(in.Params, "crop", "x", 0, 0, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	y, err := paramUint(in.Params, "crop", "y", 0, 0, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	w, err := paramUint(in.Params, "crop", "width", 0, 1, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	h, err := paramUint(in.Params, "crop", "height", 0, 1, abi.MaxImageSide)
	if err != nil {
		return abi.Image{}, err
	}
	if w == 0 {
		w = sw - min(x, sw)
	}
	if h == 0 {
		h = sh - min(y, sh)
	}
	if w == 0 || h == 0 || x+w > sw || y+h > sh {
		return abi.Image{}, paramErr("crop", "width", "rectangle "+strconv.FormatUint(w, 10)+"×"+strconv.FormatUint(h, 10)+
			" at ("+strconv.FormatUint(x, 10)+","+strconv.FormatUint(y, 10)+") does not fit the "+
			strconv.FormatUint(sw, 10)+"×"+strconv.FormatUint(sh, 10)+" image")
	}
	return sdk.Crop(src, uint32(x), uint32(y), uint32(w), uint32(h))
}

func watermark(in *abi.PostInput) (abi.Image, error) {
	im := in.Image
	text, ok := abi.ParamValue(in.Params, "text")
	if !ok {
		text = "kiln"
	}
	if len(text) > 256 {
		return abi.Image{}, paramErr("watermark", "text", "longer than 256 bytes")
	}
	auto := uint64(max(1, min(im.Width, im.Height)/256))
	scale, err := paramUint(in.Params, "watermark", "scale", auto, 1, 32)
	if err != nil {
		return abi.Image{}, err
	}
	margin, err := paramUint(in.Params, "watermark", "margin", 2*scale, 0, 1024)
	if err != nil {
		return abi.Image{}, err
	}
	fg, err := paramColor(in.Params, "watermark", "color", sdk.RGBA(255, 255, 255, 230))
	if err != nil {
		return abi.Image{}, err
	}
	bg, err := paramColor(in.Params, "watermark", "background", sdk.RGBA(0, 0, 0, 110))
	if err != nil {
		return abi.Image{}, err
	}
	tw, th := sdk.TextSize(text, int(scale))
	pad := int64(scale)
	off := int64(margin) + pad
	W, H := int64(im.Width), int64(im.Height)
	var x, y int64
	switch p, _ := abi.ParamValue(in.Params, "position"); p {
	case "", "bottom-right":
		x, y = W-int64(tw)-off, H-int64(th)-off
	case "bottom-left":
		x, y = off, H-int64(th)-off
	case "top-right":
		x, y = W-int64(tw)-off, off
	case "top-left":
		x, y = off, off
	case "center":
		x, y = (W-int64(tw))/2, (H-int64(th))/2
	default:
		return abi.Image{}, paramErr("watermark", "position", "want bottom-right, bottom-left, top-right, top-left or center, got "+strconv.Quote(p))
	}
	if err := sdk.DrawText(im, int32(x), int32(y), text, int32(scale), int32(pad), fg, bg); err != nil {
		return abi.Image{}, err
	}
	return im, nil
}

func grayscale(in *abi.PostInput) (abi.Image, error) {
	amount, err := paramFloat(in.Params, "grayscale", "amount", 1, 0, 1)
	if err != nil {
		return abi.Image{}, err
	}
	m := sdk.Grayscale(float32(amount))
	if err := sdk.ApplyColorMatrix(in.Image, &m); err != nil {
		return abi.Image{}, err
	}
	return in.Image, nil
}
