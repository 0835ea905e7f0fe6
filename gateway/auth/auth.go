// Package auth resolves the tenant of each request from its API key
// (Authorization: Bearer kiln_…, or for browser WebSockets the subprotocol
// kiln.bearer.<key>). Tenants and hashed keys are mirrored from the tenants
// KV bucket by a watcher, so creations, quota changes and revocations take
// effect at once on every gateway. A loopback-only server whose recorded
// auth mode is keyless (decided once at start-up, see tenants.DecideMode)
// admits requests as the local tenant with any bearer or none; revoking or
// removing tenants never brings that mode back.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/tenants"
)

// Principal is the authenticated tenant of a request.
type Principal struct {
	Tenant       string
	Quota        config.Quota
	QuotaVersion int
	// Local marks the keyless local tenant.
	Local bool
	// Weight is the tenant's fair-queuing weight (0 counts as 1).
	Weight float64
	// Quality is the tenant's quality mode ("adaptive" opts in).
	Quality string
	// Admin marks a request made with the admin key (the operator).
	Admin bool
}

// WSProtocol is the WebSocket subprotocol of Kiln's event stream.
const WSProtocol = "kiln.v1"

// WSKeyPrefix prefixes an API key offered as a WebSocket subprotocol.
const WSKeyPrefix = "kiln.bearer."

// Authenticator checks API keys against the mirrored tenants.
type Authenticator struct {
	store      *tenants.Store
	allowLocal bool
	localQuota config.Quota

	mu      sync.RWMutex
	keys    map[string]tenants.Key
	tenants map[string]tenants.Tenant
	mode    tenants.Mode
	synced  chan struct{}
	once    sync.Once
}

// New returns an authenticator; allowLocal permits the keyless local
// tenant (only for loopback listeners) while no tenant exists. Run must be
// running for it to know any tenant.
func New(store *tenants.Store, allowLocal bool, localQuota config.Quota) *Authenticator {
	return &Authenticator{store: store, allowLocal: allowLocal, localQuota: localQuota,
		keys: map[string]tenants.Key{}, tenants: map[string]tenants.Tenant{}, synced: make(chan struct{})}
}

// Run mirrors the tenants bucket until ctx ends.
func (a *Authenticator) Run(ctx context.Context) error {
	w, err := a.store.KV().WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("auth: watch tenants: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("auth: tenants watch ended")
			}
			if e == nil {
				a.once.Do(func() { close(a.synced) })
				continue
			}
			a.apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
		}
	}
}

func (a *Authenticator) apply(key string, value []byte, deleted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case key == tenants.ModeKey:
		if deleted {
			a.mode = tenants.Mode{Mode: tenants.ModeKeys, Reason: "mode record deleted"}
			return
		}
		a.mode = tenants.DecodeMode(value)
	case strings.HasPrefix(key, "tenant."):
		id := strings.TrimPrefix(key, "tenant.")
		var t tenants.Tenant
		if deleted || json.Unmarshal(value, &t) != nil {
			delete(a.tenants, id)
			return
		}
		a.tenants[id] = t
	case strings.HasPrefix(key, "key."):
		id := strings.TrimPrefix(key, "key.")
		var k tenants.Key
		if deleted || json.Unmarshal(value, &k) != nil {
			delete(a.keys, id)
			return
		}
		a.keys[id] = k
	}
}

// Synced is closed once the initial tenants are mirrored.
func (a *Authenticator) Synced() <-chan struct{} { return a.synced }

// LiveTenants counts tenants that are not revoked.
func (a *Authenticator) LiveTenants() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	n := 0
	for _, t := range a.tenants {
		if !t.Revoked {
			n++
		}
	}
	return n
}

// Keyless reports whether requests are admitted as the local tenant: the
// listener is loopback, the recorded mode is keyless, and no live tenant
// exists. Without a mode record (or with an unreadable one) it is false.
func (a *Authenticator) Keyless() bool {
	if !a.allowLocal {
		return false
	}
	a.mu.RLock()
	keyless := a.mode.Keyless()
	a.mu.RUnlock()
	return keyless && a.LiveTenants() == 0
}

// Mode returns the mirrored auth mode as the gateway applies it.
func (a *Authenticator) Mode() tenants.Mode {
	a.mu.RLock()
	m := a.mode
	a.mu.RUnlock()
	if m.Mode == "" {
		m = tenants.Mode{Mode: tenants.ModeKeys, Reason: "no mode recorded"}
	}
	if m.Keyless() && !a.Keyless() {
		m = tenants.Mode{Mode: tenants.ModeKeys, Reason: "listener is not loopback or a tenant exists"}
	}
	return m
}

// TenantLive reports whether a tenant may still be served: it exists and is
// not revoked, or it is the local tenant while keyless mode is on. Signed
// image URLs check it, so a URL never outlives its tenant's revocation.
func (a *Authenticator) TenantLive(id string) bool {
	if id == tenants.LocalID {
		return a.Keyless()
	}
	a.mu.RLock()
	t, ok := a.tenants[id]
	a.mu.RUnlock()
	return ok && !t.Revoked
}

// LocalPrincipal is the keyless local tenant.
func (a *Authenticator) LocalPrincipal() Principal {
	return Principal{Tenant: tenants.LocalID, Quota: a.localQuota, Local: true}
}

// KeyFromRequest returns the API key of a request: the bearer token, or a
// kiln.bearer.<key> WebSocket subprotocol; "" when none is offered.
func KeyFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return h // malformed: fails verification below
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(p), WSKeyPrefix); ok {
				return k
			}
		}
	}
	return ""
}

// dummyKey makes unknown key ids cost the same hash and compare as known ones.
var dummyKey = tenants.Key{Hash: strings.Repeat("00", 32)}

// Authenticate returns the request's tenant or a 401. In keyless mode
// every request is the local tenant whatever bearer it sends (OpenAI SDKs
// always send one); otherwise an unknown key is a 401.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, *apierr.Error) {
	key := KeyFromRequest(r)
	if a.Keyless() {
		// A tenant's own key is that tenant even here (a tenant created a
		// moment ago, before its mode change is mirrored); anything else
		// is the local tenant.
		if key != "" {
			if p, err := a.Verify(key); err == nil {
				return p, nil
			}
		}
		return a.LocalPrincipal(), nil
	}
	if key == "" {
		return Principal{}, apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "",
			"an API key is required: send Authorization: Bearer kiln_…")
	}
	return a.Verify(key)
}

// Verify checks one API key.
func (a *Authenticator) Verify(key string) (Principal, *apierr.Error) {
	bad := apierr.New(http.StatusUnauthorized, apierr.CodeUnauthorized, "", "invalid or revoked API key")
	id, secret, ok := tenants.ParseKey(key)
	if !ok {
		dummyKey.Verify(key)
		return Principal{}, bad
	}
	a.mu.RLock()
	k, found := a.keys[id]
	a.mu.RUnlock()
	if !found {
		k = dummyKey
	}
	if !k.Verify(secret) || !found || k.Revoked {
		return Principal{}, bad
	}
	a.mu.RLock()
	t, found := a.tenants[k.Tenant]
	a.mu.RUnlock()
	if !found || t.Revoked {
		return Principal{}, bad
	}
	return Principal{Tenant: t.ID, Quota: t.Quota, QuotaVersion: t.QuotaVersion, Weight: t.Weight, Quality: t.Quality}, nil
}

// IsLoopback reports whether a listen address (host:port) only accepts
// connections from this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
