package comfyui

import (
	"context"
	"encoding/json"
	"sort"
	"time"
)

// StateStore keeps adapter state across restarts. A Backend that also
// implements it has finished prompts persisted.
type StateStore interface {
	// ListState returns the values of the keys under prefix.
	ListState(ctx context.Context, prefix string) (map[string][]byte, error)
	SaveState(ctx context.Context, key string, data []byte) error
	DeleteState(ctx context.Context, key string) error
}

// storedPrompt is a finished prompt as persisted.
type storedPrompt struct {
	ID       string         `json:"id"`
	ClientID string         `json:"client_id,omitempty"`
	Number   int            `json:"number"`
	Graph    Graph          `json:"graph"`
	Outputs  []string       `json:"output_nodes"`
	Status   string         `json:"status"`
	Results  map[string]any `json:"outputs"`
}

func historyPrefix(tenant string) string { return "comfyui.history." + tenant + "." }

// stateTimeout bounds one state-store call.
const stateTimeout = 5 * time.Second

// persist records a prompt finished with status.
func (h *Handler) persist(pr *prompt, status string) {
	st, ok := h.o.Backend.(StateStore)
	if !ok {
		return
	}
	h.mu.Lock()
	sp := storedPrompt{ID: pr.id, ClientID: pr.clientID, Number: pr.number, Graph: pr.graph, Status: status, Results: map[string]any{}}
	for k, v := range pr.outputs {
		sp.Results[k] = v
	}
	h.mu.Unlock()
	for _, p := range pr.plans {
		sp.Outputs = append(sp.Outputs, p.output)
	}
	data, err := json.Marshal(sp)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	_ = st.SaveState(ctx, historyPrefix(pr.tenant)+pr.id, data) // the in-memory history still answers
}

// forget deletes dropped prompts from the store.
func (h *Handler) forget(tenant string, ids []string) {
	st, ok := h.o.Backend.(StateStore)
	if !ok || len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateTimeout)
	defer cancel()
	for _, id := range ids {
		_ = st.DeleteState(ctx, historyPrefix(tenant)+id)
	}
}

// load reads a tenant's persisted history once, before its first use.
func (h *Handler) load(ctx context.Context, tenant string) {
	st, ok := h.o.Backend.(StateStore)
	if !ok {
		return
	}
	h.mu.Lock()
	done := h.loaded[tenant]
	h.mu.Unlock()
	if done {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	entries, err := st.ListState(ctx, historyPrefix(tenant))
	if err != nil {
		return // tried again on the next request
	}
	var stored []*prompt
	for _, data := range entries {
		var sp storedPrompt
		if json.Unmarshal(data, &sp) != nil || !validPromptID(sp.ID) {
			continue
		}
		pr := &prompt{id: sp.ID, tenant: tenant, clientID: sp.ClientID, number: sp.Number, graph: sp.Graph, status: sp.Status,
			outputs: sp.Results}
		if pr.outputs == nil {
			pr.outputs = map[string]any{}
		}
		for _, o := range sp.Outputs {
			pr.plans = append(pr.plans, plan{output: o})
		}
		stored = append(stored, pr)
	}
	sort.Slice(stored, func(i, j int) bool { return stored[i].number < stored[j].number })
	h.mu.Lock()
	if h.loaded[tenant] {
		h.mu.Unlock()
		return
	}
	h.loaded[tenant] = true
	tp := h.tenant(tenant)
	var merged []*prompt
	for _, pr := range stored {
		if _, dup := tp.byID[pr.id]; !dup {
			tp.byID[pr.id] = pr
			merged = append(merged, pr)
		}
		h.number = max(h.number, pr.number)
	}
	tp.order = append(merged, tp.order...) // persisted prompts are older than this process's
	h.mu.Unlock()
}
