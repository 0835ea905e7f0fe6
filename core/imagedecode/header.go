// Package imagedecode decodes untrusted PNG and JPEG images within bounds
// decided before decoding: the header gives the format, dimensions,
// channels and bit depth, hence the memory a decode will take (pixels ×
// channels × bytes per sample, as Go's decoders store them); a per-image
// limit refuses what is too large from the header alone, and a server-wide
// Budget bounds the memory of the decodes in flight together.
package imagedecode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Info is what an image's header says about it.
type Info struct {
	// Format is "png" or "jpeg".
	Format        string
	Width, Height int
	// Channels is the number of samples per pixel in the file (PNG: 1 gray,
	// 2 gray+alpha, 3 RGB, 4 RGBA, 1 palette; JPEG: components).
	Channels int
	// BitDepth is bits per sample (PNG 1-16, JPEG 8 or 12).
	BitDepth int
	// Interlaced (Adam7 PNG) and Progressive (JPEG) images take more
	// memory to decode.
	Interlaced, Progressive bool
	colorType               byte
}

// ErrFormat reports data that is neither a well-formed PNG nor JPEG header.
var ErrFormat = errors.New("imagedecode: not a PNG or JPEG image")

// Pixels is Width × Height.
func (i Info) Pixels() int64 { return int64(i.Width) * int64(i.Height) }

// DecodedBytes is the memory a decode of the image takes: pixels × stored
// channels × bytes per sample, where Go's decoders store RGB as RGBA and
// 16-bit samples as two bytes; an interlaced PNG is decoded pass by pass
// into images of their own and then merged (twice the memory), and a
// progressive JPEG also keeps 2 bytes of coefficients per sample.
func (i Info) DecodedBytes() int64 {
	px := i.Pixels()
	switch i.Format {
	case "png":
		sample := int64(1)
		if i.BitDepth == 16 {
			sample = 2
		}
		stored := int64(i.Channels)
		switch i.colorType {
		case 2: // RGB → RGBA / RGBA64
			stored = 4
		case 4: // gray+alpha → NRGBA / NRGBA64
			stored = 4
		case 3: // palette → Paletted, 1 byte per pixel
			stored, sample = 1, 1
		}
		n := px * stored * sample
		if i.Interlaced {
			n *= 2
		}
		return n
	case "jpeg":
		n := px * int64(i.Channels)
		if i.Progressive {
			n += px * int64(i.Channels) * 2
		}
		return n
	}
	return 0
}

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// Header reads an image's header without decoding any pixel.
func Header(data []byte) (Info, error) {
	switch {
	case bytes.HasPrefix(data, pngSignature):
		return pngHeader(data)
	case len(data) >= 2 && data[0] == 0xFF && data[1] == 0xD8:
		return jpegHeader(data)
	}
	return Info{}, ErrFormat
}

func pngHeader(data []byte) (Info, error) {
	rest := data[len(pngSignature):]
	if len(rest) < 8+13 || binary.BigEndian.Uint32(rest) != 13 || string(rest[4:8]) != "IHDR" {
		return Info{}, fmt.Errorf("%w: PNG without a valid IHDR chunk", ErrFormat)
	}
	h := rest[8 : 8+13]
	w, ht := binary.BigEndian.Uint32(h[0:]), binary.BigEndian.Uint32(h[4:])
	depth, ct, interlace := h[8], h[9], h[12]
	if w == 0 || ht == 0 || w > 1<<31-1 || ht > 1<<31-1 {
		return Info{}, fmt.Errorf("%w: PNG of %d×%d", ErrFormat, w, ht)
	}
	channels := map[byte]int{0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ct]
	okDepth := false
	switch ct {
	case 0:
		okDepth = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16
	case 3:
		okDepth = depth == 1 || depth == 2 || depth == 4 || depth == 8
	case 2, 4, 6:
		okDepth = depth == 8 || depth == 16
	}
	if channels == 0 || !okDepth || interlace > 1 {
		return Info{}, fmt.Errorf("%w: PNG colour type %d with bit depth %d", ErrFormat, ct, depth)
	}
	return Info{Format: "png", Width: int(w), Height: int(ht), Channels: channels, BitDepth: int(depth),
		Interlaced: interlace == 1, colorType: ct}, nil
}

func jpegHeader(data []byte) (Info, error) {
	i := 2
	for {
		// Markers may be preceded by any number of 0xFF fill bytes.
		if i >= len(data) || data[i] != 0xFF {
			return Info{}, fmt.Errorf("%w: JPEG without a frame header", ErrFormat)
		}
		for i < len(data) && data[i] == 0xFF {
			i++
		}
		if i >= len(data) {
			return Info{}, fmt.Errorf("%w: truncated JPEG", ErrFormat)
		}
		m := data[i]
		i++
		switch {
		case m == 0xD8 || m == 0x01 || m >= 0xD0 && m <= 0xD7:
			continue // no length
		case m == 0xD9 || m == 0xDA:
			return Info{}, fmt.Errorf("%w: JPEG without a frame header", ErrFormat)
		}
		if i+2 > len(data) {
			return Info{}, fmt.Errorf("%w: truncated JPEG", ErrFormat)
		}
		n := int(binary.BigEndian.Uint16(data[i:]))
		if n < 2 || i+n > len(data) {
			return Info{}, fmt.Errorf("%w: truncated JPEG segment", ErrFormat)
		}
		if m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC {
			seg := data[i+2 : i+n]
			if len(seg) < 6 {
				return Info{}, fmt.Errorf("%w: short JPEG frame header", ErrFormat)
			}
			prec := int(seg[0])
			h, w := int(binary.BigEndian.Uint16(seg[1:])), int(binary.BigEndian.Uint16(seg[3:]))
			comps := int(seg[5])
			if w == 0 || h == 0 || comps == 0 || comps > 4 || (prec != 8 && prec != 12) {
				return Info{}, fmt.Errorf("%w: JPEG frame %d×%d, %d components, %d bits", ErrFormat, w, h, comps, prec)
			}
			return Info{Format: "jpeg", Width: w, Height: h, Channels: comps, BitDepth: prec,
				Progressive: m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE}, nil
		}
		i += n
	}
}
