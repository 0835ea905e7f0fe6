package pipeline

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/lora"
)

// adaptable returns the model's LoRA interface, or an error naming the
// family when it takes none.
func (p *Pipeline) adaptable() (lora.Adaptable, error) {
	a, ok := p.m.(lora.Adaptable)
	if !ok {
		return nil, fmt.Errorf("pipeline: this model family does not take LoRAs or embeddings")
	}
	return a, nil
}

// LoRAModules lists the model's adaptable layers per namespace, to parse
// LoRA files against (lora.Parse); nil when the family takes no LoRAs.
func (p *Pipeline) LoRAModules() lora.Modules {
	a, err := p.adaptable()
	if err != nil {
		return nil
	}
	return lora.ModulesOf(a)
}

// EmbeddingDims gives the hidden size of each text encoder, to parse
// textual-inversion embeddings against (lora.ParseEmbedding); nil when
// the family takes no embeddings.
func (p *Pipeline) EmbeddingDims() map[string]int {
	a, err := p.adaptable()
	if err != nil {
		return nil
	}
	return a.EmbeddingDims()
}

// installUNetRows puts the per-row LoRA updates of a group's jobs on the
// UNet for a call that evaluates rows [lo, hi) of the group's rows (all of
// them, or part of a call split for memory): each job's rows
// (unconditional and conditional) get its LoRAs, clipped to the call and
// renumbered from lo; padding rows get none. It returns the function that
// removes them.
func (p *Pipeline) installUNetRows(g []*batchState, lo, hi int) (func(), error) {
	var rows []lora.Rows
	off, any := 0, false
	for _, st := range g {
		n := st.rows()
		if from, to := max(off, lo), min(off+n, hi); len(st.req.LoRAs) > 0 && from < to {
			rows = append(rows, lora.Rows{From: from - lo, To: to - lo, Uses: st.req.LoRAs})
			any = true
		}
		off += n
	}
	if !any {
		return func() {}, nil
	}
	a, err := p.adaptable()
	if err != nil {
		return nil, err
	}
	if dora := doraUse(rows); dora != "" {
		return p.mergeUNet(a, g, rows, off, dora)
	}
	remove, err := lora.Install(a.LoRATargets()[lora.UNet], lora.UNet, rows, false)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	return remove, nil
}

// installText puts a job's text-encoder LoRAs on the text encoder for its
// prompt encodings and returns the function that removes them with the
// identity of what was installed (for the text cache key: encodings with
// different adapters must never share an entry).
func (p *Pipeline) installText(req Request) (remove func(), key string, err error) {
	key = adapterKey(req.LoRAs, req.Embeddings)
	var uses []lora.Use
	for _, u := range req.LoRAs {
		if u.Text != 0 && u.LoRA != nil && u.LoRA.HasTextEncoder() {
			uses = append(uses, u)
		}
	}
	if len(uses) == 0 {
		return func() {}, key, nil
	}
	a, err := p.adaptable()
	if err != nil {
		return nil, "", err
	}
	// the encoders run one job's prompts at a time: one range covers
	// every row
	var removes []func()
	remove = func() {
		for _, r := range removes {
			r()
		}
	}
	for _, ns := range []string{lora.TextEncoder, lora.TextEncoder2} {
		t, ok := a.LoRATargets()[ns]
		if !ok {
			continue
		}
		r, err := lora.Install(t, ns, []lora.Rows{{From: 0, To: 1 << 30, Uses: uses}}, true)
		if err != nil {
			remove()
			return nil, "", fmt.Errorf("pipeline: %w", err)
		}
		removes = append(removes, r)
	}
	return remove, key, nil
}

// adapterKey names the text-encoder LoRAs (with their text weights) and
// embeddings a prompt is encoded with; "" when none.
func adapterKey(uses []lora.Use, embs []*lora.Embedding) string {
	var b strings.Builder
	for _, u := range uses {
		if u.Text == 0 || u.LoRA == nil || !u.LoRA.HasTextEncoder() {
			continue
		}
		fmt.Fprintf(&b, "lora:%s:%s;", u.Key(), strconv.FormatFloat(float64(u.Text), 'g', -1, 32))
	}
	for _, e := range embs {
		fmt.Fprintf(&b, "emb:%s;", e.Key())
	}
	return b.String()
}

// doraUse names a weight-decomposed (DoRA) LoRA among rows' uses; "" when
// none.
func doraUse(rows []lora.Rows) string {
	for _, r := range rows {
		for _, u := range r.Uses {
			if u.UNet != 0 && u.LoRA != nil && u.LoRA.DoRA(lora.UNet) {
				return u.Name
			}
		}
	}
	return ""
}

// mergeKey identifies a job's UNet LoRA set when it must be merged (it
// holds a DoRA LoRA); "" when the set runs unmerged.
func mergeKey(uses []lora.Use) string {
	if doraUse([]lora.Rows{{Uses: uses}}) == "" {
		return ""
	}
	var b strings.Builder
	for _, u := range uses {
		fmt.Fprintf(&b, "%s:%g;", u.Key(), u.UNet)
	}
	return b.String()
}

// mergeUNet applies a group's LoRAs by merging them into the UNet's
// weights, as DoRA needs (its per-row magnitude rescales the base layer's
// output, which the unmerged low-rank products cannot do). Merged weights
// serve every row, so every job of the group must use the same LoRA set
// (padding rows are discarded); batchRun.groups keeps such jobs apart, and
// a group that mixes them anyway is refused. The merge is redone for each
// evaluation (TODO(lora): keep the merged weights over a group's steps).
func (p *Pipeline) mergeUNet(a lora.Adaptable, g []*batchState, rows []lora.Rows, total int, dora string) (func(), error) {
	want := mergeKey(g[0].req.LoRAs)
	for _, st := range g[1:] {
		if mergeKey(st.req.LoRAs) != want {
			return nil, fmt.Errorf("pipeline: LoRA %s is a DoRA (weight-decomposed) LoRA, which is applied by merging: it cannot share a batch with jobs using other LoRAs", dora)
		}
	}
	t, ok := a.LoRATargets()[lora.UNet].(interface {
		lora.Merger
		Backend() backend.Backend
	})
	if !ok {
		return nil, fmt.Errorf("pipeline: LoRA %s is a DoRA LoRA, and this model's denoiser cannot merge LoRAs", dora)
	}
	restore, rest, err := lora.Merge(t.Backend(), t, lora.UNet, g[0].req.LoRAs, false)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if len(rest) == 0 {
		return restore, nil
	}
	remove, err := lora.Install(t, lora.UNet, []lora.Rows{{From: 0, To: total, Uses: rest}}, false)
	if err != nil {
		restore()
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	return func() { remove(); restore() }, nil
}
