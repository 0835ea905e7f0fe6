// Package urlsign makes and checks expiring signed image URLs (HMAC-SHA256
// over tenant, image id and expiry), so that an image URL handed to a
// client — as the OpenAI Images API does with response_format "url" —
// works without the API key until it expires. The secret lives in the
// meta KV bucket so that every gateway shares it.
package urlsign

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MetaBucket holds server-wide settings such as the URL signing secret.
const MetaBucket = "kiln_meta"

// Signer signs and verifies image URLs.
type Signer struct {
	secret []byte
	now    func() time.Time
}

// New returns a signer with the given secret (at least 32 bytes).
func New(secret []byte) (*Signer, error) {
	if len(secret) < 32 {
		return nil, errors.New("urlsign: secret shorter than 32 bytes")
	}
	return &Signer{secret: append([]byte(nil), secret...), now: time.Now}, nil
}

// Load reads the shared secret from the meta bucket, creating it on first
// use.
func Load(ctx context.Context, js jetstream.JetStream, replicas int) (*Signer, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: MetaBucket,
		Description: "kiln server settings", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("urlsign: meta bucket: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("urlsign: %w", err)
	}
	if _, err := kv.Create(ctx, "url_secret", secret); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("urlsign: store secret: %w", err)
	}
	e, err := kv.Get(ctx, "url_secret")
	if err != nil {
		return nil, fmt.Errorf("urlsign: read secret: %w", err)
	}
	return New(e.Value())
}

func (s *Signer) mac(tenant, id string, exp int64) string {
	m := hmac.New(sha256.New, s.secret)
	fmt.Fprintf(m, "%s\x00%s\x00%d", tenant, id, exp)
	return hex.EncodeToString(m.Sum(nil))
}

// Query returns the query parameters that authorise fetching a tenant's
// image until ttl from now.
func (s *Signer) Query(tenant, imageID string, ttl time.Duration) url.Values {
	exp := s.now().Add(ttl).Unix()
	return url.Values{"tenant": {tenant}, "expires": {strconv.FormatInt(exp, 10)}, "sig": {s.mac(tenant, imageID, exp)}}
}

// Verify checks the signature on a request for imageID and returns the
// tenant it grants.
func (s *Signer) Verify(q url.Values, imageID string) (tenant string, err error) {
	tenant = q.Get("tenant")
	exp, perr := strconv.ParseInt(q.Get("expires"), 10, 64)
	sig, herr := hex.DecodeString(q.Get("sig"))
	if tenant == "" || perr != nil || herr != nil {
		return "", errors.New("urlsign: malformed signature")
	}
	want, _ := hex.DecodeString(s.mac(tenant, imageID, exp))
	if !hmac.Equal(sig, want) {
		return "", errors.New("urlsign: bad signature")
	}
	if s.now().Unix() > exp {
		return "", errors.New("urlsign: link expired")
	}
	return tenant, nil
}
