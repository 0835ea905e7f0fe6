package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream resources.
const (
	QueueStream  = "KILN_QUEUE"
	JobsBucket   = "kiln_jobs"
	ImagesBucket = "kiln_images"
	queuePrefix  = "kiln.q."
)

// ErrNotFound reports a job, image or upload that does not exist for the
// tenant asking (including one that belongs to another tenant).
var ErrNotFound = errors.New("jobs: not found")

// ErrConflict reports a state change that lost a race or is not allowed.
var ErrConflict = errors.New("jobs: conflicting update")

// Options configure Open.
type Options struct {
	// Attempts is the number of deliveries a job gets before it fails.
	Attempts int
	// AckWait is how long a worker may stay silent about a job before it
	// is redelivered.
	AckWait time.Duration
	// Retention is how long job records and images are kept.
	Retention time.Duration
	// Replicas of each stream (1 for a single server).
	Replicas int
}

// Store reaches the job flow's JetStream resources.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	images jetstream.ObjectStore
	stream jetstream.Stream
	opts   Options

	// lanes caches the consumers of (priority, tenant) lanes by name.
	lanesMu sync.Mutex
	lanes   map[string]jetstream.Consumer
}

// Open creates (or updates) the stream, consumers, bucket and object store
// and returns a Store over them. Every role calls it at start; it is
// idempotent.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        QueueStream,
		Description: "kiln work queue: one message per job",
		Subjects:    []string{queuePrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Duplicates:  2 * time.Minute,
		MaxMsgSize:  64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: queue stream: %w", err)
	}
	s := &Store{js: js, stream: stream, lanes: map[string]jetstream.Consumer{}, opts: opts}
	if err := s.openLanes(ctx); err != nil {
		return nil, err
	}
	s.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      JobsBucket,
		Description: "kiln job records by tenant.job",
		History:     1,
		TTL:         opts.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: job bucket: %w", err)
	}
	s.images, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      ImagesBucket,
		Description: "kiln images and init images by tenant/name",
		TTL:         opts.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: image store: %w", err)
	}
	return s, nil
}

// Attempts returns the configured number of deliveries per job.
func (s *Store) Attempts() int { return s.opts.Attempts }

// AckWait returns the configured redelivery timeout.
func (s *Store) AckWait() time.Duration { return s.opts.AckWait }

func recordKey(tenant, id string) string { return tenant + "." + id }

// QueueSubject is the work-queue subject of one job.
func QueueSubject(priority, tenant, id string) string {
	return queuePrefix + priority + "." + tenant + "." + id
}

// QueueMessage is the body of a work-queue message.
type QueueMessage struct {
	Tenant string `json:"tenant"`
	ID     string `json:"id"`
	// Work (megapixel-steps) and Weight (the tenant's share) are what the
	// fair queue charges the tenant for this job.
	Work   float64 `json:"work,omitempty"`
	Weight float64 `json:"weight,omitempty"`
}

// Submit stores a new job record and enqueues it. The record is written
// first, so a crash between the two leaves a queued record without a
// message, which Reconcile re-enqueues.
func (s *Store) Submit(ctx context.Context, j *Job) error {
	if !ValidTenantID(j.Tenant) || !ValidID(j.ID) || !ValidPriority(j.Params.Priority) {
		return fmt.Errorf("jobs: submit: invalid tenant, id or priority")
	}
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("jobs: encode %s: %w", j.ID, err)
	}
	if _, err := s.kv.Create(ctx, recordKey(j.Tenant, j.ID), data); err != nil {
		return fmt.Errorf("jobs: store %s: %w", j.ID, err)
	}
	if err := s.enqueue(ctx, j, j.ID); err != nil {
		msg := "could not enqueue: " + err.Error()
		_, _ = s.Update(context.WithoutCancel(ctx), j.Tenant, j.ID, func(r *Job) error {
			r.Status = StatusFailed
			r.Error = &Error{Code: ErrCodeLost, Message: msg}
			now := time.Now().UTC()
			r.FinishedAt = &now
			return nil
		})
		return fmt.Errorf("jobs: enqueue %s: %w", j.ID, err)
	}
	return nil
}

// Requeue publishes a fresh queue message for a job that a worker hands
// back (the caller then acknowledges the old one). A fresh message is
// available at once, even across a restart of the NATS server, whereas a
// negative acknowledgement may only take effect after the ack wait.
func (s *Store) Requeue(ctx context.Context, j *Job) error {
	return s.enqueue(ctx, j, fmt.Sprintf("%s.h%d", j.ID, time.Now().UnixNano()))
}

func (s *Store) enqueue(ctx context.Context, j *Job, msgID string) error {
	if _, err := s.lane(ctx, j.Params.Priority, j.Tenant); err != nil {
		return err
	}
	body, _ := json.Marshal(QueueMessage{Tenant: j.Tenant, ID: j.ID, Work: j.Params.Work(), Weight: j.Weight})
	_, err := s.js.Publish(ctx, QueueSubject(j.Params.Priority, j.Tenant, j.ID), body, jetstream.WithMsgID(msgID))
	return err
}

// Get returns a tenant's job and its KV revision. Another tenant's job is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Job, uint64, error) {
	if !ValidTenantID(tenant) || !ValidID(id) {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, recordKey(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jobs: get %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("jobs: decode %s: %w", id, err)
	}
	return &j, e.Revision(), nil
}

// Update applies fn to the current record and writes it back with a
// compare-and-set on the revision, retrying when another writer won. fn may
// return ErrConflict (or any error) to abandon the update.
func (s *Store) Update(ctx context.Context, tenant, id string, fn func(*Job) error) (*Job, error) {
	for try := 0; ; try++ {
		j, rev, err := s.Get(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		if err := fn(j); err != nil {
			return j, err
		}
		data, err := json.Marshal(j)
		if err != nil {
			return nil, fmt.Errorf("jobs: encode %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, recordKey(tenant, id), data, rev)
		if err == nil {
			return j, nil
		}
		if !isWrongRevision(err) || try >= 50 {
			return nil, fmt.Errorf("jobs: update %s: %w", id, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence")
}

// ListOptions select a page of a tenant's jobs, newest first.
type ListOptions struct {
	// Status keeps only jobs in this state ("" for all).
	Status string
	// Limit is the page size (1-100).
	Limit int
	// Before continues after this job id (the previous page's cursor).
	Before string
}

// List returns a page of a tenant's jobs, newest first, and the cursor of
// the next page ("" at the end).
func (s *Store) List(ctx context.Context, tenant string, o ListOptions) ([]*Job, string, error) {
	if !ValidTenantID(tenant) {
		return nil, "", nil
	}
	lister, err := s.kv.ListKeysFiltered(ctx, tenant+".*")
	if err != nil {
		return nil, "", fmt.Errorf("jobs: list %s: %w", tenant, err)
	}
	var ids []string
	for k := range lister.Keys() {
		if id := strings.TrimPrefix(k, tenant+"."); ValidID(id) {
			ids = append(ids, id)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	out := make([]*Job, 0, o.Limit)
	for i, id := range ids {
		if o.Before != "" && id >= o.Before {
			continue
		}
		j, _, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue // expired or deleted meanwhile
		}
		if err != nil {
			return nil, "", err
		}
		if o.Status != "" && j.Status != o.Status {
			continue
		}
		out = append(out, j)
		if len(out) == o.Limit {
			if i < len(ids)-1 {
				return out, id, nil
			}
			break
		}
	}
	return out, "", nil
}

// Watch streams every job record change (after the current values, which
// it also delivers, followed by a nil marker) until ctx ends.
func (s *Store) Watch(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("jobs: watch: %w", err)
	}
	return w, nil
}

// DecodeEntry decodes a watched job record; ok is false for deletions and
// undecodable values.
func DecodeEntry(e jetstream.KeyValueEntry) (*Job, bool) {
	if e == nil || e.Operation() != jetstream.KeyValuePut {
		return nil, false
	}
	var j Job
	if json.Unmarshal(e.Value(), &j) != nil {
		return nil, false
	}
	return &j, true
}

// QueueDepth returns the jobs waiting for a worker and those delivered to
// one but not yet finished.
func (s *Store) QueueDepth(ctx context.Context) (waiting, inFlight int, err error) {
	lanes, err := s.Lanes(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("jobs: queue depth: %w", err)
	}
	for _, l := range lanes {
		waiting += l.Pending
		inFlight += l.AckPending
	}
	return waiting, inFlight, nil
}

// Reconcile finds live jobs (queued or running) older than grace whose
// queue message is gone — a crash between storing the record and
// enqueueing it, or a lost store — and enqueues them again. It returns how
// many it re-enqueued.
func (s *Store) Reconcile(ctx context.Context, grace time.Duration) (int, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("jobs: reconcile: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	n := 0
	for _, k := range keys {
		tenant, id, ok := strings.Cut(k, ".")
		if !ok {
			continue
		}
		j, _, err := s.Get(ctx, tenant, id)
		if err != nil || Final(j.Status) || time.Since(j.CreatedAt) < grace {
			continue
		}
		_, err = s.stream.GetLastMsgForSubject(ctx, QueueSubject(j.Params.Priority, j.Tenant, j.ID))
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("jobs: reconcile %s: %w", j.ID, err)
		}
		if err := s.enqueue(ctx, j, fmt.Sprintf("%s.r%d", j.ID, time.Now().UnixNano())); err != nil {
			return n, fmt.Errorf("jobs: re-enqueue %s: %w", j.ID, err)
		}
		n++
	}
	return n, nil
}

func imageObject(tenant, imageID string) string { return tenant + "/" + imageID }

func uploadObject(tenant, jobID string) string { return tenant + "/init-" + jobID }

// PutImage stores a generated image (PNG bytes) of a tenant.
func (s *Store) PutImage(ctx context.Context, tenant, imageID string, png []byte) error {
	if _, err := s.images.PutBytes(ctx, imageObject(tenant, imageID), png); err != nil {
		return fmt.Errorf("jobs: store image %s: %w", imageID, err)
	}
	return nil
}

// GetImage returns a tenant's image; another tenant's is ErrNotFound.
func (s *Store) GetImage(ctx context.Context, tenant, imageID string) ([]byte, error) {
	if _, _, ok := ParseImageID(imageID); !ok || !ValidTenantID(tenant) {
		return nil, ErrNotFound
	}
	data, err := s.images.GetBytes(ctx, imageObject(tenant, imageID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: image %s: %w", imageID, err)
	}
	return data, nil
}

// PutUpload stores the init image of a job.
func (s *Store) PutUpload(ctx context.Context, tenant, jobID string, data []byte) (string, error) {
	name := uploadObject(tenant, jobID)
	if _, err := s.images.PutBytes(ctx, name, data); err != nil {
		return "", fmt.Errorf("jobs: store init image of %s: %w", jobID, err)
	}
	return name, nil
}

// GetUpload returns an init image stored by PutUpload, by its object name.
func (s *Store) GetUpload(ctx context.Context, tenant, name string) ([]byte, error) {
	if !strings.HasPrefix(name, tenant+"/init-") {
		return nil, ErrNotFound
	}
	data, err := s.images.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: init image %s: %w", name, err)
	}
	return data, nil
}
