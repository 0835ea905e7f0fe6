package loralib

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// tenantDir is the folder under <models_dir>/loras that holds tenants'
// uploads, one sub-folder per tenant (named by a hash of the tenant, so
// that no tenant name can reach outside it). List skips folders, so the
// uploads never show in the shared listing.
const tenantDir = ".tenants"

// ErrTooLarge is an upload over its size limit.
var ErrTooLarge = errors.New("loralib: the upload is over the size limit")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName refuses names that are not 1–64 letters, digits, '.', '_' or
// '-' (starting with a letter or digit), or that end in a pickle's or
// safetensors' extension.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("LoRA name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	for _, ext := range []string{".safetensors", ".pt", ".ckpt", ".pth", ".bin"} {
		if strings.HasSuffix(strings.ToLower(name), ext) {
			return fmt.Errorf("LoRA name %q: give the name without the %s extension", name, ext)
		}
	}
	return nil
}

// tenantFolder is the folder of tenant's uploaded LoRAs.
func (l *Library) tenantFolder(tenant string) string {
	sum := sha256.Sum256([]byte(tenant))
	return filepath.Join(l.dir, LoRAs, tenantDir, hex.EncodeToString(sum[:12]))
}

// Put stores an uploaded LoRA of tenant under name: it copies at most limit
// bytes of body to a temporary file in the tenant's folder (more is
// ErrTooLarge), calls check on that file (which refuses files that do not
// fit the model) and then renames it into place, replacing an earlier
// upload of the same name. The file is synced before the rename, so that an
// accepted upload survives a crash.
func (l *Library) Put(tenant, name string, body io.Reader, limit int64, check func(path string) error) (Entry, error) {
	if l.dir == "" {
		return Entry{}, errors.New("loralib: the server has no models folder to store uploads in")
	}
	if err := CheckName(name); err != nil {
		return Entry{}, err
	}
	dir := l.tenantFolder(tenant)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Entry{}, fmt.Errorf("loralib: %w", err)
	}
	f, err := os.CreateTemp(dir, ".upload-*.safetensors")
	if err != nil {
		return Entry{}, fmt.Errorf("loralib: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this is a no-op
	n, err := io.Copy(f, io.LimitReader(body, limit+1))
	if err == nil && n > limit {
		err = ErrTooLarge
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("loralib: storing the upload: %w", err)
	}
	if err := check(tmp); err != nil {
		return Entry{}, err
	}
	path := filepath.Join(dir, name+".safetensors")
	if err := os.Rename(tmp, path); err != nil {
		return Entry{}, fmt.Errorf("loralib: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename's directory entry
		d.Close()
	}
	e, err := l.entry(path, name)
	e.Tenant = true
	return e, err
}

// Delete removes tenant's uploaded LoRA name; os.ErrNotExist (wrapped)
// when there is none.
func (l *Library) Delete(tenant, name string) error {
	if l.dir == "" || CheckName(name) != nil {
		return fmt.Errorf("loralib: LoRA %q: %w", name, os.ErrNotExist)
	}
	path := filepath.Join(l.tenantFolder(tenant), name+".safetensors")
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("loralib: LoRA %q: %w", name, err)
	}
	l.mu.Lock()
	delete(l.hashes, path)
	l.mu.Unlock()
	return nil
}

// ListFor returns the kind's entries a tenant sees: the installed ones and,
// for LoRAs, the tenant's uploads (Tenant set), which hide an installed
// file of the same name. Sorted by name.
func (l *Library) ListFor(tenant, kind string) ([]Entry, error) {
	all, err := l.List(kind)
	if err != nil || kind != LoRAs || l.dir == "" || tenant == "" {
		return all, err
	}
	dir := l.tenantFolder(tenant)
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loralib: %w", err)
	}
	own := map[string]bool{}
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".safetensors")
		if !ok || de.IsDir() || CheckName(name) != nil {
			continue // temporary files start with '.'
		}
		e, err := l.entry(filepath.Join(dir, de.Name()), name)
		if err != nil {
			continue
		}
		e.Tenant = true
		own[name] = true
		all = append(all, e)
	}
	out := all[:0]
	for _, e := range all {
		if e.Tenant || !own[e.Name] {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// FindFor is Find over what tenant sees (ListFor).
func (l *Library) FindFor(tenant, kind, name string) (Entry, error) {
	if tenant == "" || kind != LoRAs {
		return l.Find(kind, name)
	}
	all, err := l.ListFor(tenant, kind)
	if err != nil {
		return Entry{}, err
	}
	for _, e := range all {
		if e.Name == name && e.Tenant {
			return e, nil
		}
	}
	e, err := l.Find(kind, name)
	var u *UnknownError
	if errors.As(err, &u) {
		names := make([]string, len(all))
		for i, e := range all {
			names[i] = e.Name
		}
		u.Close = Close(name, names, 5)
	}
	return e, err
}
