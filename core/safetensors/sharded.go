package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Sharded is a checkpoint split over several safetensors files and tied
// together by a *.safetensors.index.json whose weight_map names the shard
// that holds each tensor. It implements Source.
type Sharded struct {
	path      string
	shards    map[string]*File // by file name
	weightMap map[string]string
	names     []string
	metadata  map[string]json.RawMessage
}

type indexFile struct {
	Metadata  map[string]json.RawMessage `json:"metadata"`
	WeightMap map[string]string          `json:"weight_map"`
}

// OpenIndex opens a sharded checkpoint from its index file; the shards must
// lie in the index file's folder. Every tensor the weight map names must be
// present in its shard.
func OpenIndex(indexPath string) (*Sharded, error) {
	js, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("safetensors: index: %w", err)
	}
	var idx indexFile
	if err := json.Unmarshal(js, &idx); err != nil {
		return nil, fmt.Errorf("safetensors: index %s: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors: index %s: empty or missing weight_map", indexPath)
	}
	s := &Sharded{path: indexPath, shards: map[string]*File{}, weightMap: idx.WeightMap, metadata: idx.Metadata}
	dir := filepath.Dir(indexPath)
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || strings.ContainsAny(shard, `/\`) || shard == "." || shard == ".." {
			s.Close()
			return nil, fmt.Errorf("safetensors: index %s: tensor %q: shard name %q must be a plain file name in the index's folder", indexPath, name, shard)
		}
		f, ok := s.shards[shard]
		if !ok {
			f, err = Open(filepath.Join(dir, shard))
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("safetensors: index %s: %w", indexPath, err)
			}
			s.shards[shard] = f
		}
		if _, ok := f.Info(name); !ok {
			s.Close()
			return nil, fmt.Errorf("safetensors: index %s: tensor %q is not in shard %s", indexPath, name, shard)
		}
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// Names returns every tensor name of the weight map in sorted order.
func (s *Sharded) Names() []string { return append([]string(nil), s.names...) }

// Info describes the named tensor (offsets are relative to its shard).
func (s *Sharded) Info(name string) (TensorInfo, bool) {
	shard, ok := s.weightMap[name]
	if !ok {
		return TensorInfo{}, false
	}
	f := s.shards[shard]
	if f == nil {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// Bytes returns a read-only view of the named tensor in its shard's map.
func (s *Sharded) Bytes(name string) ([]byte, error) {
	shard, ok := s.weightMap[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: no tensor %q in %s", name, s.path)
	}
	f := s.shards[shard]
	if f == nil {
		return nil, fmt.Errorf("safetensors: tensor %q: %s is closed", name, s.path)
	}
	return f.Bytes(name)
}

// Shards returns the file names of the shards, sorted.
func (s *Sharded) Shards() []string {
	out := make([]string, 0, len(s.shards))
	for k := range s.shards {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Metadata returns the index's "metadata" values that are JSON strings
// (numbers such as total_size are formatted as their JSON text).
func (s *Sharded) Metadata() map[string]string {
	out := make(map[string]string, len(s.metadata))
	for k, v := range s.metadata {
		var str string
		if json.Unmarshal(v, &str) == nil {
			out[k] = str
		} else {
			out[k] = string(v)
		}
	}
	return out
}

// Close unmaps every shard.
func (s *Sharded) Close() error {
	var errs []error
	for k, f := range s.shards {
		errs = append(errs, f.Close())
		delete(s.shards, k)
	}
	return errors.Join(errs...)
}
