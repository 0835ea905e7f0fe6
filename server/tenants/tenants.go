// Package tenants stores tenants and their API keys in a JetStream KV
// bucket. Keys have the form kiln_<key id>_<secret>; only the SHA-256 of the
// secret is stored, and Verify compares it in constant time.
package tenants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
)

// Bucket is the KV bucket holding tenants ("tenant.<id>") and keys ("key.<key id>").
const Bucket = "kiln_tenants"

// LocalID is the keyless tenant of a loopback-only server without tenants.
const LocalID = "local"

// ErrNotFound reports an unknown tenant.
var ErrNotFound = errors.New("tenants: not found")

// ErrExists reports a tenant id that is taken.
var ErrExists = errors.New("tenants: already exists")

// Tenant is one customer of the service.
type Tenant struct {
	ID        string       `json:"id"`
	Quota     config.Quota `json:"quota"`
	CreatedAt time.Time    `json:"created_at"`
	Revoked   bool         `json:"revoked,omitempty"`
	// QuotaVersion grows with every quota change (plan caches key on it).
	QuotaVersion int `json:"quota_version"`
	// Weight is the tenant's share of the workers under contention
	// relative to other tenants (weighted fair queuing; 0 counts as 1).
	Weight float64 `json:"weight,omitempty"`
	// Quality "adaptive" lets the adaptive quality policy adjust the
	// tenant's requests under load ("" or "fixed": never).
	Quality string `json:"quality,omitempty"`
}

// Key is a stored API key: its id and the hash of its secret.
type Key struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	CreatedAt time.Time `json:"created_at"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// Store reads and writes tenants and keys.
type Store struct{ kv jetstream.KeyValue }

// Open creates (or opens) the tenants bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "kiln tenants and hashed API keys",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("tenants: bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

// KV exposes the bucket (for watchers).
func (s *Store) KV() jetstream.KeyValue { return s.kv }

var keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("tenants: crypto/rand failed: %v", err))
	}
	return keyEncoding.EncodeToString(b)
}

// HashSecret returns the stored form of a key secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ParseKey splits "kiln_<id>_<secret>" into id and secret.
func ParseKey(key string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(key, "kiln_")
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || len(id) != 16 || len(secret) < 32 || len(secret) > 128 {
		return "", "", false
	}
	return id, secret, true
}

// Verify reports whether secret matches the key's stored hash, comparing
// in constant time.
func (k Key) Verify(secret string) bool {
	want, err := hex.DecodeString(k.Hash)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// Create makes a tenant with the given quota and its first API key, which
// is returned in full (it is not stored and cannot be shown again).
func (s *Store) Create(ctx context.Context, id string, q config.Quota) (*Tenant, string, error) {
	if !jobs.ValidTenantID(id) || id == LocalID {
		return nil, "", fmt.Errorf("tenants: invalid tenant id %q (1-32 of a-z, 0-9, '-', '_'; %q is reserved)", id, LocalID)
	}
	if err := q.Validate(); err != nil {
		return nil, "", fmt.Errorf("tenants: %w", err)
	}
	// Keys are required from now on; recorded before the tenant exists so
	// that no moment has a tenant while the store still says keyless.
	if err := s.markKeyed(ctx); err != nil {
		return nil, "", err
	}
	t := &Tenant{ID: id, Quota: q, CreatedAt: time.Now().UTC(), QuotaVersion: 1}
	data, _ := json.Marshal(t)
	if _, err := s.kv.Create(ctx, "tenant."+id, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, "", fmt.Errorf("%w: %s", ErrExists, id)
		}
		return nil, "", fmt.Errorf("tenants: create %s: %w", id, err)
	}
	key, err := s.NewKey(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return t, key, nil
}

// NewKey adds an API key to a tenant and returns it in full.
func (s *Store) NewKey(ctx context.Context, tenant string) (string, error) {
	t, err := s.Get(ctx, tenant)
	if err != nil {
		return "", err
	}
	if t.Revoked {
		return "", fmt.Errorf("tenants: %s is revoked", tenant)
	}
	id := randomToken(10)[:16]
	secret := randomToken(32)
	k := Key{ID: id, Tenant: tenant, Hash: HashSecret(secret), CreatedAt: time.Now().UTC()}
	data, _ := json.Marshal(k)
	if _, err := s.kv.Create(ctx, "key."+id, data); err != nil {
		return "", fmt.Errorf("tenants: store key: %w", err)
	}
	return "kiln_" + id + "_" + secret, nil
}

// Get returns a tenant by id.
func (s *Store) Get(ctx context.Context, id string) (*Tenant, error) {
	if !jobs.ValidTenantID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	e, err := s.kv.Get(ctx, "tenant."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("tenants: get %s: %w", id, err)
	}
	var t Tenant
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return nil, fmt.Errorf("tenants: decode %s: %w", id, err)
	}
	return &t, nil
}

// GetKey returns a stored key by id.
func (s *Store) GetKey(ctx context.Context, id string) (*Key, error) {
	e, err := s.kv.Get(ctx, "key."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: key %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("tenants: get key: %w", err)
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return nil, fmt.Errorf("tenants: decode key: %w", err)
	}
	return &k, nil
}

// List returns every tenant (revoked ones included), sorted by id, and how
// many live keys each has.
func (s *Store) List(ctx context.Context) ([]Tenant, map[string]int, error) {
	var ts []Tenant
	keys := map[string]int{}
	err := s.each(ctx, func(k string, v []byte) {
		switch {
		case strings.HasPrefix(k, "tenant."):
			var t Tenant
			if json.Unmarshal(v, &t) == nil {
				ts = append(ts, t)
			}
		case strings.HasPrefix(k, "key."):
			var key Key
			if json.Unmarshal(v, &key) == nil && !key.Revoked {
				keys[key.Tenant]++
			}
		}
	})
	sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
	return ts, keys, err
}

func (s *Store) each(ctx context.Context, fn func(k string, v []byte)) error {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return fmt.Errorf("tenants: list: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	for _, k := range names {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("tenants: read %s: %w", k, err)
		}
		fn(k, e.Value())
	}
	return nil
}

// Revoke disables a tenant and every key of it.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if _, err := s.update(ctx, id, func(t *Tenant) { t.Revoked = true }); err != nil {
		return err
	}
	var keyIDs []string
	if err := s.each(ctx, func(k string, v []byte) {
		var key Key
		if strings.HasPrefix(k, "key.") && json.Unmarshal(v, &key) == nil && key.Tenant == id && !key.Revoked {
			keyIDs = append(keyIDs, key.ID)
		}
	}); err != nil {
		return err
	}
	for _, kid := range keyIDs {
		if err := s.RevokeKey(ctx, id, kid); err != nil {
			return err
		}
	}
	return nil
}

// SetQuota replaces a tenant's quota.
func (s *Store) SetQuota(ctx context.Context, id string, q config.Quota) (*Tenant, error) {
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("tenants: %w", err)
	}
	return s.update(ctx, id, func(t *Tenant) { t.Quota = q; t.QuotaVersion++ })
}

// Settings are a tenant's adjustable settings besides its quota.
type Settings struct {
	// Weight is the fair-queuing weight (> 0; nil: unchanged).
	Weight *float64 `json:"weight,omitempty"`
	// Quality is "fixed" or "adaptive" (nil: unchanged).
	Quality *string `json:"quality,omitempty"`
}

// Validate reports settings out of range.
func (st Settings) Validate() error {
	if st.Weight != nil && (!(*st.Weight > 0) || *st.Weight > 1000) {
		return fmt.Errorf("tenants: weight must be in (0, 1000], got %v", *st.Weight)
	}
	if st.Quality != nil && *st.Quality != "fixed" && *st.Quality != "adaptive" {
		return fmt.Errorf("tenants: quality must be fixed or adaptive, got %q", *st.Quality)
	}
	return nil
}

// SetSettings changes a tenant's weight and quality mode.
func (s *Store) SetSettings(ctx context.Context, id string, st Settings) (*Tenant, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	return s.update(ctx, id, func(t *Tenant) {
		if st.Weight != nil {
			t.Weight = *st.Weight
		}
		if st.Quality != nil {
			t.Quality = *st.Quality
		}
	})
}

func (s *Store) update(ctx context.Context, id string, fn func(*Tenant)) (*Tenant, error) {
	for try := 0; try < 20; try++ {
		e, err := s.kv.Get(ctx, "tenant."+id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err != nil {
			return nil, fmt.Errorf("tenants: get %s: %w", id, err)
		}
		var t Tenant
		if err := json.Unmarshal(e.Value(), &t); err != nil {
			return nil, fmt.Errorf("tenants: decode %s: %w", id, err)
		}
		fn(&t)
		data, _ := json.Marshal(t)
		if _, err := s.kv.Update(ctx, "tenant."+id, data, e.Revision()); err == nil {
			return &t, nil
		}
	}
	return nil, fmt.Errorf("tenants: update %s: too many concurrent writers", id)
}
