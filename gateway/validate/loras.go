package validate

import (
	"errors"
	"math"
	"strings"
	"unicode"

	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/loralib"
)

// MaxLoRAs is the most LoRAs one job may use.
const MaxLoRAs = 8

// MaxLoRAWeight bounds the absolute value of a LoRA weight.
const MaxLoRAWeight = 10

// LoRARequest is one entry of a request's loras field. Weight defaults to
// 1; TextWeight (the text encoder's) defaults to Weight.
type LoRARequest struct {
	Name       string   `json:"name"`
	Weight     *float64 `json:"weight,omitempty"`
	TextWeight *float64 `json:"text_weight,omitempty"`
}

// SetLibrary sets the installed LoRAs and embeddings requests may name.
// Call it before serving.
func (v *Validator) SetLibrary(lib *loralib.Library) { v.lib = lib }

// resolveLoRAs fills params' LoRAs from the request's loras field and the
// prompt's tags, and its embeddings from the names the prompts mention.
// Unknown names are a 400 listing close matches. A tenant's uploads are
// found before installed LoRAs of the same name.
func (v *Validator) resolveLoRAs(tenant string, r *JobRequest, params *jobs.Params) *apierr.Error {
	_, tags, err := lora.ExtractTags(r.Prompt)
	if err != nil {
		return apierr.Invalid("prompt", "%v", err)
	}
	if _, neg, err := lora.ExtractTags(r.NegativePrompt); err != nil || len(neg) > 0 {
		return apierr.Invalid("negative_prompt", "LoRA tags are only read from the prompt")
	}
	for i, l := range r.LoRAs {
		t := lora.Tag{Name: l.Name, UNet: 1}
		if l.Weight != nil {
			t.UNet = *l.Weight
		}
		t.Text = t.UNet
		if l.TextWeight != nil {
			t.Text = *l.TextWeight
		}
		if strings.TrimSpace(l.Name) == "" {
			return apierr.Invalid("loras", "loras[%d] has no name", i)
		}
		tags = append(tags, t)
	}
	if len(tags) > MaxLoRAs {
		return apierr.Limit("loras", "%d LoRAs; the limit is %d", len(tags), MaxLoRAs)
	}
	params.LoRAs = nil
	for _, t := range tags {
		for _, w := range []float64{t.UNet, t.Text} {
			if math.IsNaN(w) || math.Abs(w) > MaxLoRAWeight {
				return apierr.Invalid("loras", "LoRA %q: weight %v is outside [-%d, %d]", t.Name, w, MaxLoRAWeight, MaxLoRAWeight)
			}
		}
		e, ferr := v.find(tenant, loralib.LoRAs, t.Name)
		if ferr != nil {
			return ferr
		}
		l := jobs.LoRA{Name: t.Name, Weight: t.UNet, TextWeight: t.Text, Hash: e.Hash}
		if e.Tenant {
			l.Tenant = tenant
		}
		params.LoRAs = append(params.LoRAs, l)
	}
	params.Embeddings = nil
	if v.lib == nil {
		return nil
	}
	embs, lerr := v.lib.List(loralib.Embeddings)
	if lerr != nil {
		return nil // listing failed: no embeddings (the worker reports what it cannot load)
	}
	for _, e := range embs {
		if mentions(r.Prompt, e.Name) || mentions(r.NegativePrompt, e.Name) {
			params.Embeddings = append(params.Embeddings, jobs.Embedding{Name: e.Name, Hash: e.Hash})
		}
	}
	return nil
}

func (v *Validator) find(tenant, kind, name string) (loralib.Entry, *apierr.Error) {
	if v.lib == nil {
		return loralib.Entry{}, apierr.Invalid("loras", "unknown LoRA %q: no LoRAs are installed", name)
	}
	e, err := v.lib.FindFor(tenant, kind, name)
	if err != nil {
		var u *loralib.UnknownError
		ae := apierr.Invalid("loras", "%v", err)
		if errors.As(err, &u) {
			ae.Details = map[string]any{"close_matches": u.Close}
		}
		return loralib.Entry{}, ae
	}
	return e, nil
}

// mentions reports whether text contains name as a whole word (case
// folded), as an embedding trigger.
func mentions(text, name string) bool {
	t, n := strings.ToLower(text), strings.ToLower(name)
	for i := 0; ; {
		j := strings.Index(t[i:], n)
		if j < 0 {
			return false
		}
		j += i
		before, after := j == 0, j+len(n) == len(t)
		if !before {
			before = !isWord(rune(t[j-1]))
		}
		if !after {
			after = !isWord(rune(t[j+len(n)]))
		}
		if before && after {
			return true
		}
		i = j + 1
	}
}

func isWord(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }
