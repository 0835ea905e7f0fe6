// Package imageio writes and reads the PNG files Kiln produces: PNG images
// carrying text chunks, in particular the "parameters" chunk in which
// AUTOMATIC1111 records how an image was generated (see Parameters), so
// that other tools can read Kiln's settings back and Kiln can read theirs;
// AlphaMask turns an image's transparency into an inpainting mask.
package imageio

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"unicode/utf8"
)

// ParametersKey is the text chunk keyword AUTOMATIC1111 stores generation
// parameters under.
const ParametersKey = "parameters"

// pngSignature starts every PNG file.
var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// maxTextChunk bounds the size of a text chunk the reader accepts.
const maxTextChunk = 16 << 20

// Text is one PNG text chunk: a keyword (1–79 Latin-1 characters) and its
// text.
type Text struct {
	Key, Value string
}

// WritePNG encodes img as PNG with the given text chunks placed right after
// the header. A value that Latin-1 can hold is written as tEXt, any other
// as an uncompressed UTF-8 iTXt chunk (as PIL does).
func WritePNG(w io.Writer, img image.Image, texts ...Text) error {
	var buf bytes.Buffer
	// The fastest deflate: a served 512² image took about 52 ms to encode
	// at the default level on the H200 host (kiln bench --serve --trace),
	// which sat in every served job's latency; the files are larger.
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return fmt.Errorf("imageio: encode png: %w", err)
	}
	data := buf.Bytes()
	// signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 crc)
	const afterIHDR = 8 + 25
	if len(data) < afterIHDR || string(data[12:16]) != "IHDR" {
		return errors.New("imageio: unexpected png encoder output")
	}
	var chunks bytes.Buffer
	for _, t := range texts {
		if err := writeText(&chunks, t); err != nil {
			return err
		}
	}
	bw := bufio.NewWriter(w)
	bw.Write(data[:afterIHDR])
	bw.Write(chunks.Bytes())
	bw.Write(data[afterIHDR:])
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("imageio: write png: %w", err)
	}
	return nil
}

// writeText appends one tEXt or iTXt chunk.
func writeText(w *bytes.Buffer, t Text) error {
	if len(t.Key) == 0 || len(t.Key) > 79 {
		return fmt.Errorf("imageio: text keyword %q must be 1 to 79 characters", t.Key)
	}
	for _, r := range t.Key {
		if r < 32 || r > 126 {
			return fmt.Errorf("imageio: text keyword %q must be printable ASCII", t.Key)
		}
	}
	if latin1, ok := toLatin1(t.Value); ok {
		writeChunk(w, "tEXt", append(append([]byte(t.Key), 0), latin1...))
		return nil
	}
	if !utf8.ValidString(t.Value) {
		return fmt.Errorf("imageio: text %q is not valid UTF-8", t.Key)
	}
	// keyword, 0, compression flag 0, method 0, empty language, 0, empty
	// translated keyword, 0, text
	body := append([]byte(t.Key), 0, 0, 0, 0, 0)
	writeChunk(w, "iTXt", append(body, t.Value...))
	return nil
}

func toLatin1(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 255 || r == utf8.RuneError {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

func writeChunk(w *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	copy(hdr[4:], typ)
	w.Write(hdr[:])
	w.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var c [4]byte
	binary.BigEndian.PutUint32(c[:], crc.Sum32())
	w.Write(c[:])
}

// ReadText reads the text chunks (tEXt, zTXt and iTXt) of a PNG stream up
// to IEND without decoding the image (text may also follow the image data).
// A text chunk with a bad CRC or a malformed body is an error.
func ReadText(r io.Reader) ([]Text, error) {
	br := bufio.NewReader(r)
	sig := make([]byte, 8)
	if _, err := io.ReadFull(br, sig); err != nil || !bytes.Equal(sig, pngSignature) {
		return nil, errors.New("imageio: not a PNG file")
	}
	var out []Text
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("imageio: truncated PNG: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		typ := string(hdr[4:])
		if n > 1<<31-1 {
			return nil, fmt.Errorf("imageio: chunk %q length %d too large", typ, n)
		}
		isText := typ == "tEXt" || typ == "zTXt" || typ == "iTXt"
		if !isText {
			if _, err := io.CopyN(io.Discard, br, int64(n)+4); err != nil {
				return nil, fmt.Errorf("imageio: truncated %s chunk: %w", typ, err)
			}
			if typ == "IEND" {
				return out, nil
			}
			continue
		}
		if n > maxTextChunk {
			return nil, fmt.Errorf("imageio: %s chunk of %d bytes exceeds %d", typ, n, maxTextChunk)
		}
		data := make([]byte, n+4)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("imageio: truncated %s chunk: %w", typ, err)
		}
		crc := crc32.NewIEEE()
		crc.Write(hdr[4:])
		crc.Write(data[:n])
		if crc.Sum32() != binary.BigEndian.Uint32(data[n:]) {
			return nil, fmt.Errorf("imageio: %s chunk has a bad CRC", typ)
		}
		t, err := parseText(typ, data[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
}

func parseText(typ string, d []byte) (Text, error) {
	k := bytes.IndexByte(d, 0)
	if k < 1 || k > 79 {
		return Text{}, fmt.Errorf("imageio: %s chunk has a bad keyword", typ)
	}
	key := latin1String(d[:k])
	rest := d[k+1:]
	switch typ {
	case "tEXt":
		return Text{key, latin1String(rest)}, nil
	case "zTXt":
		if len(rest) < 1 || rest[0] != 0 {
			return Text{}, errors.New("imageio: zTXt chunk with unknown compression")
		}
		v, err := inflate(rest[1:])
		if err != nil {
			return Text{}, err
		}
		return Text{key, latin1String(v)}, nil
	default: // iTXt
		if len(rest) < 2 {
			return Text{}, errors.New("imageio: short iTXt chunk")
		}
		compressed, method := rest[0], rest[1]
		rest = rest[2:]
		for skip := 0; skip < 2; skip++ { // language tag, translated keyword
			z := bytes.IndexByte(rest, 0)
			if z < 0 {
				return Text{}, errors.New("imageio: malformed iTXt chunk")
			}
			rest = rest[z+1:]
		}
		v := rest
		if compressed != 0 {
			if method != 0 {
				return Text{}, errors.New("imageio: iTXt chunk with unknown compression")
			}
			var err error
			if v, err = inflate(rest); err != nil {
				return Text{}, err
			}
		}
		if !utf8.Valid(v) {
			return Text{}, errors.New("imageio: iTXt text is not UTF-8")
		}
		return Text{key, string(v)}, nil
	}
}

func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("imageio: compressed text: %w", err)
	}
	defer zr.Close()
	v, err := io.ReadAll(io.LimitReader(zr, maxTextChunk+1))
	if err != nil {
		return nil, fmt.Errorf("imageio: compressed text: %w", err)
	}
	if len(v) > maxTextChunk {
		return nil, errors.New("imageio: compressed text too large")
	}
	return v, nil
}

func latin1String(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// ReadParameters returns the "parameters" text of a PNG stream, or "" with
// no error when it has none.
func ReadParameters(r io.Reader) (string, error) {
	ts, err := ReadText(r)
	if err != nil {
		return "", err
	}
	for _, t := range ts {
		if t.Key == ParametersKey {
			return t.Value, nil
		}
	}
	return "", nil
}
