package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// labelKeyPath holds the secret that turns tenant ids into metric-label
// pseudonyms; it lives in the registry's store so that every process and
// every restart uses the same pseudonyms.
const labelKeyPath = "meta/label-key"

// loadLabelKey reads the pseudonym secret, creating it on first use.
func loadLabelKey(ctx context.Context, s Store) ([]byte, error) {
	key, err := s.Get(ctx, labelKeyPath)
	if err == nil && len(key) >= 32 {
		return key, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("registry: read label key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("registry: label key: %w", err)
	}
	if err := s.Put(ctx, labelKeyPath, key); err != nil {
		return nil, fmt.Errorf("registry: store label key: %w", err)
	}
	return key, nil
}

// TenantPseudonym is the name a tenant's modules carry in metrics, which
// anyone who can read /metrics sees: "t-" and 10 hex digits of an
// HMAC of the tenant id, stable across restarts, and not reversible without
// the registry's secret. Logs of module loads pair it with the tenant id.
func (r *Registry) TenantPseudonym(tenant string) string {
	m := hmac.New(sha256.New, r.labelKey)
	m.Write([]byte(tenant))
	return "t-" + hex.EncodeToString(m.Sum(nil))[:10]
}

// ModulePseudonym is the name a tenant's module carries in metrics: "m-"
// and 8 hex digits of an HMAC of tenant, kind and name (module names are
// the tenant's and may say what it does).
func (r *Registry) ModulePseudonym(tenant string, kind Kind, name string) string {
	m := hmac.New(sha256.New, r.labelKey)
	m.Write([]byte(tenant + "\x00" + string(kind) + "\x00" + name))
	return "m-" + hex.EncodeToString(m.Sum(nil))[:8]
}

// label is a module's metrics label: kind/name@vN for the operator's
// modules; t-<pseudonym>/kind/m-<pseudonym>@vN for a tenant's, which
// names neither the tenant nor the module (the load log line pairs them).
func (r *Registry) label(scope string, kind Kind, ref Ref) string {
	if scope == "" {
		return string(kind) + "/" + ref.String()
	}
	return fmt.Sprintf("%s/%s/%s@v%d", r.TenantPseudonym(scope), kind, r.ModulePseudonym(scope, kind, ref.Name), ref.Version)
}
