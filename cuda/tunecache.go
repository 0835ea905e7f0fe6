package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/cuda/internal/kernels"
)

// tuneQueue holds the shapes met while tuning is deferred, in order.
type tuneQueue struct {
	on     bool
	conv   []convKey
	linear []linKey
	queued map[any]bool
	tuned  int // shapes tuned by TuneDeferred since the last export
}

// DeferTuning turns deferred tuning on or off. While on, a convolution or
// matrix-product shape met for the first time runs on the heuristic
// default (Kiln's implicit GEMM with a tile chosen by shape, or cuBLAS)
// and is queued; TuneDeferred measures queued shapes later, off any
// request's path. Shapes already measured (or imported) keep their choice.
func (d *Device) DeferTuning(on bool) {
	if d.later == nil {
		d.later = &tuneQueue{queued: map[any]bool{}}
	}
	d.later.on = on
}

func (d *Device) deferConv(k convKey) bool {
	q := d.later
	if q == nil || !q.on {
		return false
	}
	if !q.queued[k] {
		q.queued[k] = true
		q.conv = append(q.conv, k)
	}
	return true
}

func (d *Device) deferLinear(k linKey) bool {
	q := d.later
	if q == nil || !q.on {
		return false
	}
	if !q.queued[k] {
		q.queued[k] = true
		q.linear = append(q.linear, k)
	}
	return true
}

// DeferredShapes is the number of shapes waiting for TuneDeferred.
func (d *Device) DeferredShapes() int {
	if d.later == nil {
		return 0
	}
	return len(d.later.conv) + len(d.later.linear)
}

// TuneDeferred measures up to n queued shapes (as the first use of a
// shape does without deferral) and returns how many it measured. Later
// work on those shapes uses the measured choice. Like every Device
// method it must not run concurrently with other work on the device.
func (d *Device) TuneDeferred(n int) int {
	q := d.later
	if q == nil || !d.tune {
		return 0
	}
	was := q.on
	q.on = false
	defer func() { q.on = was }()
	done := 0
	for done < n && len(q.conv) > 0 {
		k := q.conv[0]
		q.conv = q.conv[1:]
		delete(q.queued, k)
		if _, ok := d.convPick[k]; !ok {
			d.Backend(k.dt).planConv(k.g, k.padB, k.padR, k.dt, k.fusable)
		}
		done++
	}
	for done < n && len(q.linear) > 0 {
		k := q.linear[0]
		q.linear = q.linear[1:]
		delete(q.queued, k)
		if _, ok := d.linPick[k]; !ok {
			d.Backend(k.dt).planLinear(k.m, k.n, k.k, k.dt, k.bias, k.fusable)
		}
		done++
	}
	q.tuned += done
	return done
}

// TuningKey names the setting in which this device's measured choices
// hold: GPU name and compute capability, driver, cuBLAS and the hash of
// Kiln's kernel image. A file of choices made under another key is not
// used.
func (d *Device) TuningKey() string {
	in := d.info
	return fmt.Sprintf("%s|sm_%d%d|driver %d|cublas %d|kernels %s", in.Name, in.Major, in.Minor, in.Driver, in.CuBLASMajor, kernels.ImageHash())
}

// tuningFile is the stored form of a device's measured choices.
type tuningFile struct {
	Key    string      `json:"key"`
	Conv   []convEntry `json:"conv"`
	Linear []linEntry  `json:"linear"`
}

type convEntry struct {
	DType   tensor.DType `json:"dtype"`
	Geom    [12]int      `json:"geom"` // bn h w c ho wo cout kh kw stride padT padL
	PadB    int          `json:"pad_b"`
	PadR    int          `json:"pad_r"`
	Fusable bool         `json:"fusable"`
	Method  convMethod   `json:"method"`
	Tile    string       `json:"tile,omitempty"`
	Algo    int          `json:"algo,omitempty"`
}

type linEntry struct {
	DType   tensor.DType `json:"dtype"`
	M       int          `json:"m"`
	N       int          `json:"n"`
	K       int          `json:"k"`
	Bias    bool         `json:"bias"`
	Fusable bool         `json:"fusable"`
	Method  linMethod    `json:"method"`
	Tile    string       `json:"tile,omitempty"`
}

// ExportTuning returns the device's measured choices with its TuningKey.
func (d *Device) ExportTuning() ([]byte, error) {
	f := tuningFile{Key: d.TuningKey()}
	for k, p := range d.convPick {
		g := k.g
		f.Conv = append(f.Conv, convEntry{DType: k.dt, Geom: [12]int{g.bn, g.h, g.w, g.c, g.ho, g.wo, g.cout, g.kh, g.kw, g.stride, g.padT, g.padL},
			PadB: k.padB, PadR: k.padR, Fusable: k.fusable, Method: p.method, Tile: p.tile, Algo: p.algo})
	}
	for k, p := range d.linPick {
		f.Linear = append(f.Linear, linEntry{DType: k.dt, M: k.m, N: k.n, K: k.k, Bias: k.bias, Fusable: k.fusable, Method: p.method, Tile: p.tile})
	}
	if d.later != nil {
		d.later.tuned = 0
	}
	return json.Marshal(f)
}

// ErrTuningKey is returned by ImportTuning for choices measured in another
// setting (GPU, driver, cuBLAS or kernel image).
var ErrTuningKey = errors.New("cuda: tuning results are for another GPU, driver or kernel image")

// ImportTuning adds stored choices (from ExportTuning) to the device and
// returns how many it took; choices the device has measured itself win.
func (d *Device) ImportTuning(data []byte) (int, error) {
	var f tuningFile
	if err := json.Unmarshal(data, &f); err != nil {
		return 0, fmt.Errorf("cuda: tuning file: %w", err)
	}
	if f.Key != d.TuningKey() {
		return 0, ErrTuningKey
	}
	n := 0
	for _, e := range f.Conv {
		if e.Method > convIm2col || (e.Method == convImplicit && !validTile(e.Tile)) {
			continue
		}
		g := e.Geom
		k := convKey{dt: e.DType, g: convGeom{bn: g[0], h: g[1], w: g[2], c: g[3], ho: g[4], wo: g[5], cout: g[6], kh: g[7], kw: g[8], stride: g[9], padT: g[10], padL: g[11]},
			padB: e.PadB, padR: e.PadR, fusable: e.Fusable}
		if _, ok := d.convPick[k]; !ok {
			d.convPick[k] = convPlan{method: e.Method, tile: e.Tile, algo: e.Algo}
			n++
		}
	}
	for _, e := range f.Linear {
		if e.Method > linLt || (e.Method == linImplicit && !validTile(e.Tile)) {
			continue
		}
		k := linKey{dt: e.DType, m: e.M, n: e.N, k: e.K, bias: e.Bias, fusable: e.Fusable}
		if _, ok := d.linPick[k]; !ok {
			d.linPick[k] = linPlan{method: e.Method, tile: e.Tile}
			n++
		}
	}
	return n, nil
}

func validTile(t string) bool {
	for _, v := range tiles {
		if v == t {
			return true
		}
	}
	return false
}

// TuningPath is the file under dir that holds the choices of a device
// with the given TuningKey.
func TuningPath(dir, key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "tuning-"+hex.EncodeToString(h[:8])+".json")
}

// LoadTuning imports the choices stored under dir for this device, if
// any: it returns how many it took (0 and no error when there is no file).
func (d *Device) LoadTuning(dir string) (int, error) {
	data, err := os.ReadFile(TuningPath(dir, d.TuningKey()))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cuda: %w", err)
	}
	return d.ImportTuning(data)
}

// SaveTuning writes the device's choices under dir (atomically).
func (d *Device) SaveTuning(dir string) error {
	data, err := d.ExportTuning()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cuda: %w", err)
	}
	path := TuningPath(dir, d.TuningKey())
	tmp, err := os.CreateTemp(dir, ".tuning-*")
	if err != nil {
		return fmt.Errorf("cuda: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("cuda: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cuda: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cuda: %w", err)
	}
	return nil
}

// TunedSinceSave is the number of shapes TuneDeferred measured since the
// choices were last exported.
func (d *Device) TunedSinceSave() int {
	if d.later == nil {
		return 0
	}
	return d.later.tuned
}
