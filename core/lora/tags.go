package lora

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Tag is one <lora:name:weight> (or <lora:name:unet_weight:te_weight>)
// from a prompt.
type Tag struct {
	Name       string
	UNet, Text float64
}

var tagRE = regexp.MustCompile(`<lora:([^:<>]+)((?::[^:<>]*){0,2})>`)

// ExtractTags removes AUTOMATIC1111's LoRA tags from prompt and returns the
// prompt without them and the tags in order: <lora:name> (weight 1),
// <lora:name:w> (w for the denoiser and the text encoder) and
// <lora:name:unet_w:te_w>. A weight that is not a finite number is an
// error naming the tag.
func ExtractTags(prompt string) (string, []Tag, error) {
	var tags []Tag
	var err error
	clean := tagRE.ReplaceAllStringFunc(prompt, func(m string) string {
		if err != nil {
			return m
		}
		sub := tagRE.FindStringSubmatch(m)
		t := Tag{Name: strings.TrimSpace(sub[1]), UNet: 1, Text: 1}
		ws := strings.Split(strings.TrimPrefix(sub[2], ":"), ":")
		if sub[2] != "" {
			var vals []float64
			for _, w := range ws {
				v, perr := strconv.ParseFloat(strings.TrimSpace(w), 64)
				if perr != nil || v != v || v > 1e6 || v < -1e6 {
					err = fmt.Errorf("prompt tag %s: weight %q is not a number", m, w)
					return m
				}
				vals = append(vals, v)
			}
			t.UNet, t.Text = vals[0], vals[0]
			if len(vals) == 2 {
				t.Text = vals[1]
			}
		}
		if t.Name == "" {
			err = fmt.Errorf("prompt tag %s names no LoRA", m)
			return m
		}
		tags = append(tags, t)
		return ""
	})
	if err != nil {
		return prompt, nil, err
	}
	if len(tags) == 0 {
		return prompt, nil, nil
	}
	return strings.Join(strings.Fields(clean), " "), tags, nil
}
