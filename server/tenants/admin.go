package tenants

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
)

// AdminKeyRecord is the KV key of the admin key's hash.
const AdminKeyRecord = "admin.key"

// AdminKeyPrefix starts every admin key (tenant keys start with "kiln_").
const AdminKeyPrefix = "kilnadm_"

// adminKey is the stored admin key: the hash of its secret.
type adminKey struct {
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	// Source is "generated" or "configured" (from a file or the
	// environment).
	Source string `json:"source"`
}

// ValidAdminKey reports whether s has the form of an admin key.
func ValidAdminKey(s string) bool {
	rest, ok := strings.CutPrefix(s, AdminKeyPrefix)
	return ok && len(rest) >= 32 && len(rest) <= 128
}

// NewAdminKey returns a fresh random admin key.
func NewAdminKey() string { return AdminKeyPrefix + randomToken(32) }

// EnsureAdminKey makes an admin key when none is stored and returns it
// (the only time it is seen: only its hash is kept); "" when one exists.
func (s *Store) EnsureAdminKey(ctx context.Context) (string, error) {
	key := NewAdminKey()
	data, _ := json.Marshal(adminKey{Hash: HashSecret(key), CreatedAt: time.Now().UTC(), Source: "generated"})
	if _, err := s.kv.Create(ctx, AdminKeyRecord, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return "", nil
		}
		return "", fmt.Errorf("tenants: store admin key: %w", err)
	}
	return key, nil
}

// SetAdminKey makes key the admin key (an operator's, from a file or the
// environment), replacing any other.
func (s *Store) SetAdminKey(ctx context.Context, key, source string) error {
	if !ValidAdminKey(key) {
		return fmt.Errorf("tenants: an admin key is %s followed by 32 to 128 characters", AdminKeyPrefix)
	}
	if ok, _ := s.VerifyAdmin(ctx, key); ok {
		return nil
	}
	data, _ := json.Marshal(adminKey{Hash: HashSecret(key), CreatedAt: time.Now().UTC(), Source: source})
	if _, err := s.kv.Put(ctx, AdminKeyRecord, data); err != nil {
		return fmt.Errorf("tenants: store admin key: %w", err)
	}
	return nil
}

// RotateAdminKey replaces the admin key with a fresh one and returns it;
// the old key stops working at once.
func (s *Store) RotateAdminKey(ctx context.Context) (string, error) {
	key := NewAdminKey()
	return key, s.SetAdminKey(ctx, key, "rotated")
}

// VerifyAdmin reports whether key is the admin key, comparing hashes in
// constant time.
func (s *Store) VerifyAdmin(ctx context.Context, key string) (bool, error) {
	if !ValidAdminKey(key) {
		return false, nil
	}
	e, err := s.kv.Get(ctx, AdminKeyRecord)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tenants: admin key: %w", err)
	}
	var k adminKey
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return false, fmt.Errorf("tenants: admin key: %w", err)
	}
	want, err := hex.DecodeString(k.Hash)
	if err != nil {
		return false, nil
	}
	got, _ := hex.DecodeString(HashSecret(key))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// RevokeKey disables one API key of a tenant.
func (s *Store) RevokeKey(ctx context.Context, tenant, id string) error {
	k, err := s.GetKey(ctx, id)
	if err != nil {
		return err
	}
	if k.Tenant != tenant {
		return fmt.Errorf("%w: key %s", ErrNotFound, id)
	}
	if k.Revoked {
		return nil
	}
	k.Revoked = true
	data, _ := json.Marshal(k)
	if _, err := s.kv.Put(ctx, "key."+id, data); err != nil {
		return fmt.Errorf("tenants: revoke key %s: %w", id, err)
	}
	return nil
}

// Keys lists a tenant's keys (ids and state, never secrets).
func (s *Store) Keys(ctx context.Context, tenant string) ([]Key, error) {
	var out []Key
	err := s.each(ctx, func(k string, v []byte) {
		var key Key
		if strings.HasPrefix(k, "key.") && json.Unmarshal(v, &key) == nil && key.Tenant == tenant {
			key.Hash = ""
			out = append(out, key)
		}
	})
	return out, err
}

// ProfilePrefix starts the KV keys of operator profile overrides
// ("profile.<name>"): profiles the admin API added or changed on top of
// the configured ones.
const ProfilePrefix = "profile."

// PutProfile stores an operator's version of a performance profile.
func (s *Store) PutProfile(ctx context.Context, p config.Profile) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if !jobs.ValidTenantID(p.Name) {
		return fmt.Errorf("tenants: invalid profile name %q (1-32 of a-z, 0-9, '-', '_')", p.Name)
	}
	data, _ := json.Marshal(p)
	if _, err := s.kv.Put(ctx, ProfilePrefix+p.Name, data); err != nil {
		return fmt.Errorf("tenants: store profile %s: %w", p.Name, err)
	}
	return nil
}

// DeleteProfile removes an operator's version of a profile (the
// configured one, if any, applies again).
func (s *Store) DeleteProfile(ctx context.Context, name string) error {
	if !jobs.ValidTenantID(name) {
		return fmt.Errorf("%w: profile %q", ErrNotFound, name)
	}
	if _, err := s.kv.Get(ctx, ProfilePrefix+name); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: no operator version of profile %s", ErrNotFound, name)
	}
	if err := s.kv.Delete(ctx, ProfilePrefix+name); err != nil {
		return fmt.Errorf("tenants: delete profile %s: %w", name, err)
	}
	return nil
}

// WatchProfiles calls fn with every operator profile override (nil when
// it was deleted) as it changes, starting with the current ones, until
// ctx ends.
func (s *Store) WatchProfiles(ctx context.Context, fn func(name string, p *config.Profile)) error {
	w, err := s.kv.Watch(ctx, ProfilePrefix+"*")
	if err != nil {
		return fmt.Errorf("tenants: watch profiles: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				continue
			}
			name := strings.TrimPrefix(e.Key(), ProfilePrefix)
			var p config.Profile
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &p) != nil {
				fn(name, nil)
				continue
			}
			fn(name, &p)
		}
	}
}
