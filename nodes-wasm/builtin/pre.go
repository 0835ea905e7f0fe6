package builtin

import (
	"errors"
	"strconv"
	"strings"
	"unicode"

	"github.com/kiln-project/kiln/wasmhost/abi"
)

// preset returns the prompt and negative prompt text of a style preset.
func preset(name string) (text, negative string, ok bool) {
	switch name {
	case "cinematic":
		return "cinematic lighting, dramatic shadows, shallow depth of field, film grain, anamorphic", "flat lighting, cartoon", true
	case "photo":
		return "photograph, 35mm, natural light, sharp focus, high detail", "painting, illustration, drawing", true
	case "anime":
		return "anime style, cel shading, vibrant colors, clean line art", "photorealistic, photograph", true
	case "watercolor":
		return "watercolor painting, soft washes, visible paper texture", "photograph, hard edges", true
	case "pixel-art":
		return "pixel art, 16-bit, limited palette, crisp pixels", "blurry, smooth gradients", true
	case "line-art":
		return "monochrome line art, ink drawing, clean lines", "color, shading, photograph", true
	}
	return "", "", false
}

// presetNames lists the style presets for error messages.
const presetNames = "cinematic, photo, anime, watercolor, pixel-art, line-art"

func appendText(prompt, text string) string {
	text = strings.TrimSpace(text)
	if text == "" {
		return prompt
	}
	if strings.TrimSpace(prompt) == "" {
		return text
	}
	return strings.TrimRight(prompt, " ,") + ", " + text
}

func style(in *abi.PreInput, out *abi.PreOutput) error {
	text, _ := abi.ParamValue(in.Params, "text")
	negative, _ := abi.ParamValue(in.Params, "negative")
	if name, ok := abi.ParamValue(in.Params, "preset"); ok && name != "" {
		pt, pn, ok := preset(name)
		if !ok {
			return paramErr("style", "preset", "unknown preset "+strconv.Quote(name)+" (known: "+presetNames+")")
		}
		out.Prompt = appendText(out.Prompt, pt)
		out.NegativePrompt = appendText(out.NegativePrompt, pn)
	} else if strings.TrimSpace(text) == "" && strings.TrimSpace(negative) == "" {
		return paramErr("style", "preset", "give a preset, text or negative")
	}
	out.Prompt = appendText(out.Prompt, text)
	out.NegativePrompt = appendText(out.NegativePrompt, negative)
	if len(out.Prompt) > abi.MaxPromptBytes || len(out.NegativePrompt) > abi.MaxPromptBytes {
		return errors.New("style: the styled prompt exceeds " + strconv.Itoa(abi.MaxPromptBytes) + " bytes")
	}
	return nil
}

// words splits s into lower-case runs of letters and digits.
func words(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

func blocklist(in *abi.PreInput, out *abi.PreOutput) error {
	list, _ := abi.ParamValue(in.Params, "words")
	prompt := words(in.Prompt)
	for _, term := range strings.Split(list, ",") {
		tw := words(term)
		if len(tw) == 0 {
			continue
		}
		for i := 0; i+len(tw) <= len(prompt); i++ {
			match := true
			for k := range tw {
				if prompt[i+k] != tw[k] {
					match = false
					break
				}
			}
			if match {
				return errors.New("prompt contains the blocked term " + strconv.Quote(strings.Join(tw, " ")))
			}
		}
	}
	return nil
}
