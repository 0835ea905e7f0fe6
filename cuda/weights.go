package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/tensor"
)

// Weight sharing and offload. Every uploaded weight is keyed by a hash of
// its bytes, shape, dtypes and layout; an upload of a weight the device
// already holds returns a new handle to the same buffer (weights are never
// written after upload), so fine-tunes sharing a VAE or text encoder hold
// it once. Uploads through a Grouped view join that view's Group, which can
// move its weights to pinned host memory and back. A weight held by
// several groups leaves the device when the last of them is offloaded.

var (
	errOffloaded = errors.New("weight offloaded to host memory: restore its model before use")
	errClosed    = errors.New("weight of a closed model")
)

// weightKey identifies a weight's content as uploaded.
type weightKey struct {
	hash     uint64
	shape    string
	src, dst tensor.DType
	lay      layout
}

// wstate is what the device knows about one uploaded weight.
type wstate struct {
	key     weightKey
	holders int          // resident groups and ungrouped uploads holding it
	owners  int          // all groups (offloaded too) and ungrouped uploads holding it
	host    *pinnedBlock // non-nil while offloaded
	hostOff int64
}

// pinnedBlock is one offload's pinned host memory (mem, the first part of
// full). When the last weight in it is restored or freed it becomes a
// spare, reused by a later offload of about its size: pinning and
// unpinning gigabytes take far longer than copying them.
type pinnedBlock struct {
	full, mem []byte
	live      int
}

// maxSpare bounds the spare pinned blocks a device keeps.
const maxSpare = 2

// weightTable is a device's weight ledger; it is used on the device's
// recording goroutine (like the rest of Device), and its byte counters are
// atomics so that metrics may read them from anywhere.
type weightTable struct {
	byKey    map[weightKey]*buffer
	state    map[*buffer]*wstate
	deadHost []*pinnedBlock // to free on the device thread
	spare    []*pinnedBlock // unused, kept for reuse (oldest first)
	shared   atomic.Int64   // bytes that uploads did not allocate because the device held them
	hostHeld atomic.Int64   // pinned bytes holding offloaded weights
}

func (d *Device) weightTab() *weightTable { return d.wt }

func keyFor(shape tensor.Shape, src, dst tensor.DType, lay layout, raw []byte) weightKey {
	var b []byte
	for _, s := range shape {
		b = binary.LittleEndian.AppendUint64(b, uint64(s))
	}
	return weightKey{hash: xxhash.Sum64(raw), shape: string(b), src: src, dst: dst, lay: lay}
}

// sharedWeight returns the buffer holding a weight of this content, if the
// device holds one, restoring it first when it is offloaded.
func (d *Device) sharedWeight(k weightKey) (*buffer, error) {
	wt := d.weightTab()
	buf, ok := wt.byKey[k]
	if !ok {
		return nil, nil
	}
	if st := wt.state[buf]; st.host != nil {
		if err := d.run(func() error { return d.restoreBufs([]*buffer{buf}) }); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// noteWeight registers a freshly uploaded weight.
func (d *Device) noteWeight(buf *buffer, k weightKey) {
	wt := d.weightTab()
	wt.byKey[k] = buf
	wt.state[buf] = &wstate{key: k}
}

// forgetWeight drops a released weight from the ledger and its host copy.
func (d *Device) forgetWeight(b *buffer) {
	wt := d.wt
	st, ok := wt.state[b]
	if !ok {
		return
	}
	if wt.byKey[st.key] == b {
		delete(wt.byKey, st.key)
	}
	delete(wt.state, b)
	if st.host != nil {
		d.unpin(st.host, b.size)
		st.host = nil
	}
}

func (d *Device) unpin(p *pinnedBlock, n int64) {
	d.wt.hostHeld.Add(-n)
	p.live--
	if p.live == 0 {
		d.spareBlock(p)
	}
}

// spareBlock keeps an unused pinned block for reuse (the oldest spare
// beyond maxSpare is freed).
func (d *Device) spareBlock(p *pinnedBlock) {
	wt := d.wt
	wt.spare = append(wt.spare, p)
	if len(wt.spare) > maxSpare {
		wt.deadHost = append(wt.deadHost, wt.spare[0])
		wt.spare = wt.spare[1:]
	}
}

// pinnedFor returns a pinned block of n bytes: a spare of about that size,
// else a new one (the spares, which do not fit, are freed first so that
// pinned memory stays within what offloaded models hold plus one spare).
// Device thread.
func (d *Device) pinnedFor(n int64) (*pinnedBlock, error) {
	wt := d.wt
	best := -1
	for i, p := range wt.spare {
		if c := int64(len(p.full)); c >= n && c <= n+n/4 && (best < 0 || c < int64(len(wt.spare[best].full))) {
			best = i
		}
	}
	if best >= 0 {
		p := wt.spare[best]
		wt.spare = append(wt.spare[:best], wt.spare[best+1:]...)
		p.mem = p.full[:n]
		return p, nil
	}
	d.dropSpares()
	full, err := d.eng.hostAlloc(n)
	if err != nil {
		return nil, err
	}
	return &pinnedBlock{full: full, mem: full}, nil
}

// dropSpares frees the spare pinned blocks. Device thread.
func (d *Device) dropSpares() {
	d.wt.deadHost = append(d.wt.deadHost, d.wt.spare...)
	d.wt.spare = nil
	d.freeDeadHost()
}

// freeDeadHost returns unused pinned blocks; it runs on the device thread.
func (d *Device) freeDeadHost() {
	for _, p := range d.wt.deadHost {
		d.eng.hostFree(p.full)
	}
	d.wt.deadHost = nil
}

// Group is the set of weights uploaded through one Grouped view. Its
// methods are used on the device's goroutine, like the Backend.
type Group struct {
	d         *Device
	bufs      []*buffer
	has       map[*buffer]bool
	offloaded bool
	closed    bool
}

var _ backend.WeightGroup = (*Group)(nil)

// Grouped returns a view of the device in b's dtype whose uploads join a
// new Group (views derived with WithActivationDType join it too).
func (b *Backend) Grouped() (backend.Backend, backend.WeightGroup) {
	g := &Group{d: b.d, has: map[*buffer]bool{}}
	return &Backend{d: b.d, dt: b.dt, grp: g}, g
}

// add records that g holds buf (a new upload or a shared one).
func (g *Group) add(buf *buffer) {
	if g.has[buf] {
		return
	}
	g.has[buf] = true
	g.bufs = append(g.bufs, buf)
	st := g.d.weightTab().state[buf]
	st.owners++
	if !g.offloaded {
		st.holders++
	}
}

// live lists the group's weights the device still holds.
func (g *Group) live() []*buffer {
	wt := g.d.weightTab()
	out := g.bufs[:0]
	for _, b := range g.bufs {
		if _, ok := wt.state[b]; ok {
			out = append(out, b)
		} else {
			delete(g.has, b)
		}
	}
	g.bufs = out
	return out
}

// Footprint implements backend.WeightGroup. Host bytes count every
// offloaded weight the group holds, shared ones included.
func (g *Group) Footprint() (device, unique, host int64) {
	wt := g.d.weightTab()
	for _, b := range g.live() {
		st := wt.state[b]
		switch {
		case st.host != nil:
			host += b.size
		case b.own:
			device += b.size
			if !g.offloaded && st.holders == 1 {
				unique += b.size
			}
		}
	}
	return device, unique, host
}

// Offloaded implements backend.WeightGroup.
func (g *Group) Offloaded() bool { return g.offloaded }

// Offload implements backend.WeightGroup: it runs the recorded work, copies
// every weight no resident group or ungrouped upload still holds into one
// pinned host block, and returns their device memory to the allocator.
func (g *Group) Offload() error {
	if g.closed {
		return errors.New("cuda: offload of a closed weight group")
	}
	if g.offloaded {
		return nil
	}
	wt := g.d.weightTab()
	var move []*buffer
	for _, b := range g.live() {
		st := wt.state[b]
		st.holders--
		if st.holders == 0 && b.own {
			move = append(move, b)
		}
	}
	err := g.d.run(func() error {
		if err := g.d.flush(); err != nil {
			return err
		}
		return g.d.offloadBufs(move)
	})
	if err != nil {
		for _, b := range g.live() {
			wt.state[b].holders++
		}
		return fmt.Errorf("cuda: offload: %w", err)
	}
	g.offloaded = true
	return nil
}

// Restore implements backend.WeightGroup.
func (g *Group) Restore() error {
	if g.closed {
		return errors.New("cuda: restore of a closed weight group")
	}
	if !g.offloaded {
		return nil
	}
	wt := g.d.weightTab()
	var back []*buffer
	for _, b := range g.live() {
		if wt.state[b].host != nil {
			back = append(back, b)
		}
	}
	if err := g.d.run(func() error { return g.d.restoreBufs(back) }); err != nil {
		return fmt.Errorf("cuda: restore: %w", err)
	}
	for _, b := range g.live() {
		wt.state[b].holders++
	}
	g.offloaded = false
	return nil
}

// Close releases the group (its model is closing and its tensors must not
// be used again): weights no other group or ungrouped upload holds are
// freed at once, on the device or in host memory, without waiting for
// the garbage collector to find their handles.
func (g *Group) Close() error {
	if g.closed {
		return nil
	}
	wt := g.d.weightTab()
	var drop []*buffer
	for _, b := range g.live() {
		st := wt.state[b]
		st.owners--
		if !g.offloaded {
			st.holders--
		}
		if st.owners == 0 {
			drop = append(drop, b)
		}
	}
	g.closed = true
	g.bufs, g.has = nil, nil
	return g.d.run(func() error {
		err := g.d.flush()
		for _, b := range drop {
			b.dead = errClosed
			g.d.releaseBuffer(b)
		}
		g.d.freeDeadHost()
		return err
	})
}

// offloadBufs copies bufs to one new pinned block and releases their
// device memory (and the bias copies made from them). Device thread.
func (d *Device) offloadBufs(bufs []*buffer) error {
	d.freeDeadHost()
	// Recorded work run by the caller's flush may have freed some (their
	// handles were collected): only live weights on the device move.
	wt := d.wt
	live := bufs[:0:0]
	for _, b := range bufs {
		if st := wt.state[b]; st != nil && st.host == nil && b.own {
			live = append(live, b)
		}
	}
	bufs = live
	if len(bufs) == 0 {
		return nil
	}
	var total int64
	for _, b := range bufs {
		total += b.size
	}
	blk, err := d.pinnedFor(total)
	if err != nil {
		return fmt.Errorf("pinning %d MiB of host memory: %w", total>>20, err)
	}
	mem := blk.mem
	var off int64
	for _, b := range bufs {
		if err := d.eng.copyOut(mem[off:off+b.size], b.addr); err != nil {
			d.spareBlock(blk)
			return d.noteErr(err)
		}
		off += b.size
	}
	if err := d.noteErr(d.eng.sync()); err != nil {
		d.spareBlock(blk)
		return err
	}
	off = 0
	for _, b := range bufs {
		st := wt.state[b]
		st.host, st.hostOff = blk, off
		blk.live++
		off += b.size
		for _, c := range b.alt {
			d.releaseBuffer(c)
		}
		b.alt = nil
		if b.q8 != nil {
			d.releaseBuffer(b.q8)
			b.q8 = nil
		}
		d.alloc.release(b.addr, b.ownSize)
		d.addWeights(-b.size)
		b.own, b.addr, b.dead = false, 0, errOffloaded
	}
	wt.hostHeld.Add(total)
	return nil
}

// restoreBufs allocates device memory for offloaded bufs, copies them back
// and frees their host copies; on failure nothing changes. Device thread.
func (d *Device) restoreBufs(bufs []*buffer) error {
	d.freeDeadHost()
	if len(bufs) == 0 {
		return nil
	}
	if sp := d.spec; sp != nil {
		sp.failed, sp.tainted = true, true
	}
	addrs := make([]uint64, len(bufs))
	classes := make([]int64, len(bufs))
	for i, b := range bufs {
		a, c, err := d.alloc.alloc(b.size)
		if err != nil {
			for j := range i {
				d.alloc.release(addrs[j], classes[j])
			}
			return err
		}
		addrs[i], classes[i] = a, c
	}
	// An allocation under pressure may run the garbage collector's cleanups,
	// which can free weights of bufs: those need no restoring.
	wt := d.wt
	for i, b := range bufs {
		if st := wt.state[b]; st == nil || st.host == nil {
			d.alloc.release(addrs[i], classes[i])
			addrs[i] = 0
		}
	}
	for i, b := range bufs {
		if addrs[i] == 0 {
			continue
		}
		st := wt.state[b]
		if err := d.eng.copyIn(addrs[i], st.host.mem[st.hostOff:st.hostOff+b.size]); err != nil {
			releaseAll(d.alloc, addrs, classes)
			return d.noteErr(err)
		}
	}
	// The copies read pinned memory asynchronously: wait before freeing it.
	if err := d.noteErr(d.eng.sync()); err != nil {
		releaseAll(d.alloc, addrs, classes)
		return err
	}
	for i, b := range bufs {
		if addrs[i] == 0 {
			continue
		}
		st := wt.state[b]
		b.addr, b.own, b.ownSize, b.dead = addrs[i], true, classes[i], nil
		d.addWeights(b.size)
		d.unpin(st.host, b.size)
		st.host = nil
	}
	d.freeDeadHost()
	return nil
}

// releaseAll returns the blocks of a failed restore (0: none).
func releaseAll(a *allocator, addrs []uint64, classes []int64) {
	for i, p := range addrs {
		if p != 0 {
			a.release(p, classes[i])
		}
	}
}

// addWeights changes the uploaded-weight byte count.
func (d *Device) addWeights(n int64) {
	d.stats.Weights += n
	d.memWeights.Add(n)
}

// SharedBytes is the weight memory uploads did not allocate because the
// device already held identical weights.
func (d *Device) SharedBytes() int64 { return d.weightTab().shared.Load() }
