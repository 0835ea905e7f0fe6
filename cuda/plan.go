package cuda

import (
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"time"
)

// graphEntry is a captured segment: an executable graph and the arena whose
// fixed addresses it was captured with.
type graphEntry struct {
	key       string
	exec      graphHandle
	nodes     int
	arena     uint64
	arenaSize int64 // allocator size class of arena
	size      int64 // bytes of the arena the plan uses
	// rawOffsets gives each buffer of the recorded segment (by creation
	// index) its offset in the arena, -1 for buffers nothing uses.
	rawOffsets []int64
	first      string // encoding of the first record, to find it early
	lastUpload int    // index of the last upload record, -1 for none
	epoch      uint64 // bumped on every replay and on eviction
	lastUse    uint64
}

var errFreed = errors.New("use of a freed tensor")

// planArena places buffers (sizes, live over [first, last] record indices)
// into one arena so that buffers live at the same time never overlap:
// largest first, each at the lowest offset free over its lifetime. It
// returns the offsets and the arena size.
func planArena(sizes []int64, first, last []int, include []bool) ([]int64, int64) {
	n := len(sizes)
	order := make([]int, 0, n)
	for i := 0; i < n; i++ {
		if include[i] {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool {
		if sizes[order[a]] != sizes[order[b]] {
			return sizes[order[a]] > sizes[order[b]]
		}
		return first[order[a]] < first[order[b]]
	})
	offs := make([]int64, n)
	type span struct{ lo, hi int64 }
	var placed []int
	var total int64
	spans := make([]span, 0, 64)
	for _, i := range order {
		spans = spans[:0]
		for _, j := range placed {
			if first[j] <= last[i] && first[i] <= last[j] {
				spans = append(spans, span{offs[j], offs[j] + sizes[j]})
			}
		}
		sort.Slice(spans, func(a, b int) bool { return spans[a].lo < spans[b].lo })
		var off int64
		for _, s := range spans {
			if off+sizes[i] <= s.lo {
				break
			}
			if s.hi > off {
				off = s.hi
			}
		}
		offs[i] = off
		if off+sizes[i] > total {
			total = off + sizes[i]
		}
		placed = append(placed, i)
	}
	return offs, total
}

// segPlan is a segment reduced to the work that matters, with its buffers
// numbered in first-use order.
type segPlan struct {
	recs     []*record
	slots    []*buffer
	first    []int
	last     []int
	escape   []bool
	uploadBy []int // slot of each upload record
}

// analyse drops records whose results nobody reads (dead code), numbers the
// live buffers and computes their lifetimes.
func analyse(seg *segment) *segPlan {
	needed := make([]bool, len(seg.bufs))
	for i, b := range seg.bufs {
		if b.refs > 0 {
			needed[i] = true
		}
	}
	live := make([]bool, len(seg.recs))
	for i := len(seg.recs) - 1; i >= 0; i-- {
		r := seg.recs[i]
		if r.writes == nil || r.writes.seg != seg || !needed[r.writes.idx] {
			continue
		}
		live[i] = true
		for _, b := range r.reads {
			if b.seg == seg {
				needed[b.idx] = true
			}
		}
	}
	p := &segPlan{}
	slot := make(map[*buffer]int)
	touch := func(b *buffer, at int) {
		if b == nil || b.seg != seg {
			return
		}
		s, ok := slot[b]
		if !ok {
			s = len(p.slots)
			slot[b] = s
			p.slots = append(p.slots, b)
			p.first = append(p.first, at)
			p.last = append(p.last, at)
			p.escape = append(p.escape, b.refs > 0)
			return
		}
		if at > p.last[s] {
			p.last[s] = at
		}
	}
	for i, r := range seg.recs {
		if !live[i] {
			continue
		}
		j := len(p.recs)
		p.recs = append(p.recs, r)
		at := j
		if r.kind == recUpload {
			at = -1 // uploads run before everything else
		}
		touch(r.writes, at)
		if r.kind == recUpload {
			s := slot[r.writes]
			p.first[s] = -1
			p.uploadBy = append(p.uploadBy, s)
			continue
		}
		for _, b := range r.reads {
			touch(b, j)
		}
	}
	end := len(p.recs)
	for s := range p.slots {
		if p.escape[s] {
			p.last[s] = end
		}
	}
	return p
}

// flush plans and runs the recorded segment. It runs on the device worker.
func (d *Device) flush() error {
	seg := d.seg
	d.seg = &segment{}
	d.drainCleanups()
	defer d.releaseDeferred()
	if len(seg.recs) == 0 {
		return nil
	}
	start := time.Now()
	err := d.runSegment(seg)
	for _, b := range seg.bufs {
		b.seg = nil
		if err != nil && b.dead == nil {
			b.dead = fmt.Errorf("tensor lost: the work that made it failed: %w", err)
		}
	}
	d.stats.Flushes++
	d.stats.HostFlushTime += time.Since(start)
	return err
}

func (d *Device) runSegment(seg *segment) error {
	if d.broken != nil {
		return d.broken
	}
	useGraphs := d.opts.Graphs && !d.profiling
	sp := d.spec
	d.spec = nil
	// A speculation that matched every record only needs the escape bits
	// compared; otherwise build the whole key.
	matched := sp != nil && sp.seg == seg && sp.launched && !sp.failed && sp.pos == len(seg.raw)
	var key string
	if useGraphs && !matched {
		key = seg.fullKey()
	}
	for _, b := range seg.bufs {
		if b.refs == 0 {
			b.dead = errFreed
		}
	}
	if sp != nil && sp.seg == seg && sp.launched {
		if sp.err != nil {
			return d.noteErr(sp.err)
		}
		if matched && sp.g.key[len(seg.raw):] == seg.escapeKey() && !sp.tainted {
			d.bindRaw(sp.g, seg, false)
			d.stats.Replayed++
			d.stats.Speculated++
			return nil
		}
		d.stats.Misspeculated++ // the graph's arena holds junk now; run normally
		if useGraphs && key == "" {
			key = seg.fullKey()
		}
	}
	if useGraphs {
		if g, ok := d.graphs[key]; ok {
			return d.replay(g, seg)
		}
	}
	if d.opts.Fuse {
		d.stats.Fused += fuseResiduals(seg)
	}
	p := analyse(seg)
	if len(p.recs) == 0 {
		return nil
	}
	if useGraphs {
		h := fnv.New64a()
		h.Write([]byte(key))
		hash := h.Sum64()
		d.seen[hash]++
		if d.seen[hash] >= 2 {
			return d.capture(p, seg, key)
		}
		if len(d.seen) > 4096 {
			clear(d.seen)
		}
	}
	return d.runTransient(p)
}

// runTransient runs the segment's work directly: buffers that die inside
// the segment share one arena, returned to the allocator afterwards; the
// ones that outlive it get blocks of their own.
func (d *Device) runTransient(p *segPlan) error {
	sizes := make([]int64, len(p.slots))
	inArena := make([]bool, len(p.slots))
	for s, b := range p.slots {
		sizes[s] = b.size
		inArena[s] = !p.escape[s]
	}
	offs, total := planArena(sizes, p.first, p.last, inArena)
	var arena uint64
	var arenaClass int64
	if total > 0 {
		var err error
		arena, arenaClass, err = d.alloc.alloc(total)
		if err != nil {
			return err
		}
		defer d.alloc.release(arena, arenaClass)
	}
	for s, b := range p.slots {
		if inArena[s] {
			b.addr = arena + uint64(offs[s])
			continue
		}
		a, c, err := d.alloc.alloc(b.size)
		if err != nil {
			return err
		}
		b.addr, b.own, b.ownSize = a, true, c
		d.trackOwned(b)
	}
	if d.opts.Poison {
		if err := d.poison(p, arena, total); err != nil {
			return err
		}
	}
	d.stats.Transient++
	if d.profiling {
		return d.runProfiled(p)
	}
	for _, r := range p.recs {
		if err := d.exec(r); err != nil {
			return d.noteErr(err)
		}
	}
	return nil
}

// capture runs the segment under stream capture into a CUDA graph whose
// arena holds every buffer, then launches it and keeps it for replays.
func (d *Device) capture(p *segPlan, seg *segment, key string) error {
	sizes := make([]int64, len(p.slots))
	all := make([]bool, len(p.slots))
	for s, b := range p.slots {
		sizes[s] = b.size
		all[s] = true
	}
	offs, total := planArena(sizes, p.first, p.last, all)
	if len(d.graphs) >= d.opts.MaxGraphs {
		d.evictOldestGraph()
	}
	arena, class, err := d.alloc.alloc(max(total, 256))
	if err != nil {
		return err
	}
	g := &graphEntry{key: key, arena: arena, arenaSize: class, epoch: 1, size: total,
		rawOffsets: make([]int64, len(seg.bufs)), first: seg.first, lastUpload: seg.lastUpload}
	for i := range g.rawOffsets {
		g.rawOffsets[i] = -1
	}
	for s, b := range p.slots {
		g.rawOffsets[b.idx] = offs[s]
	}
	d.bindRaw(g, seg, true)
	if d.opts.Poison {
		if err := d.poison(p, arena, total); err != nil {
			d.alloc.release(arena, class)
			return err
		}
	}
	if err := d.uploads(p); err != nil {
		d.alloc.release(arena, class)
		return d.noteErr(err)
	}
	if err := d.eng.beginCapture(); err != nil {
		d.alloc.release(arena, class)
		return d.noteErr(err)
	}
	for _, r := range p.recs {
		if r.kind == recUpload {
			continue
		}
		if err := d.exec(r); err != nil {
			if h, _, e2 := d.eng.endCapture(); e2 == nil {
				d.eng.destroyGraph(h)
			}
			d.alloc.release(arena, class)
			return d.noteErr(err)
		}
	}
	h, nodes, err := d.eng.endCapture()
	if err != nil {
		d.alloc.release(arena, class)
		return d.noteErr(err)
	}
	g.exec, g.nodes = h, nodes
	d.clock++
	g.lastUse = d.clock
	d.graphs[key] = g
	d.byFirst[g.first] = g
	d.stats.Captured++
	if err := d.eng.launchGraph(h); err != nil {
		return d.noteErr(err)
	}
	return nil
}

// replay binds the segment's buffers to a captured graph's arena, uploads
// its inputs and launches the graph.
func (d *Device) replay(g *graphEntry, seg *segment) error {
	d.bindRaw(g, seg, true)
	if d.opts.Poison {
		if err := d.eng.memset(g.arena, g.size, 0xff); err != nil {
			return d.noteErr(err)
		}
	}
	for _, r := range seg.recs {
		if r.kind == recUpload && r.dst.addr != 0 {
			if err := d.exec(r); err != nil {
				return d.noteErr(err)
			}
		}
	}
	d.stats.Replayed++
	if err := d.eng.launchGraph(g.exec); err != nil {
		return d.noteErr(err)
	}
	return nil
}

// bindRaw gives the segment's buffers their addresses in g's arena and ties
// the ones that outlive the segment to this run of g; bump starts a new run
// (a speculative launch has already done so).
func (d *Device) bindRaw(g *graphEntry, seg *segment, bump bool) {
	if bump {
		g.epoch++
	}
	d.clock++
	g.lastUse = d.clock
	for i, b := range seg.bufs {
		if off := g.rawOffsets[i]; off >= 0 {
			b.addr = g.arena + uint64(off)
			if b.refs > 0 {
				b.graph, b.epoch = g, g.epoch
			}
		}
	}
}

// speculation is a graph launched before its segment was fully recorded:
// once the recording matched a captured graph up to its last upload, the
// uploads and the graph go to the device while the host records the rest,
// which must then match too.
type speculation struct {
	seg      *segment
	g        *graphEntry
	pos      int // bytes of g.key matched
	failed   bool
	launched bool
	tainted  bool // device memory was written outside the segment after the launch
	err      error
}

// speculate compares one more record with the candidate graph and launches
// it once every upload it needs is recorded.
func (d *Device) speculate(sp *speculation, r *record, enc []byte) {
	g := sp.g
	if sp.pos+len(enc) > len(g.key) || g.key[sp.pos:sp.pos+len(enc)] != string(enc) {
		sp.failed = true
		return
	}
	sp.pos += len(enc)
	for _, b := range r.reads {
		if b.graph == g {
			sp.failed = true // reads an output of g's previous run: never overwrite it early
			return
		}
	}
	if sp.launched || len(sp.seg.recs)-1 < g.lastUpload {
		return
	}
	if d.graphs[g.key] != g {
		sp.failed = true // evicted
		return
	}
	type up struct {
		addr uint64
		data []byte
	}
	var ups []up
	for _, rec := range sp.seg.recs {
		if rec.kind == recUpload {
			if off := g.rawOffsets[rec.dst.idx]; off >= 0 {
				ups = append(ups, up{g.arena + uint64(off), rec.data})
			}
		}
	}
	g.epoch++ // the previous run's outputs are about to be overwritten
	sp.launched = true
	d.submit(func() error {
		for _, u := range ups {
			if err := d.eng.upload(u.addr, u.data); err != nil {
				return err
			}
		}
		return d.eng.launchGraph(g.exec)
	}, &sp.err)
}

func (d *Device) uploads(p *segPlan) error {
	for _, r := range p.recs {
		if r.kind == recUpload {
			if err := d.exec(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// evictOldestGraph destroys the least recently used graph and frees its arena.
func (d *Device) evictOldestGraph() {
	var old *graphEntry
	for _, g := range d.graphs {
		if old == nil || g.lastUse < old.lastUse {
			old = g
		}
	}
	if old != nil {
		d.dropGraph(old)
	}
}

func (d *Device) dropGraph(g *graphEntry) {
	d.eng.destroyGraph(g.exec)
	d.alloc.release(g.arena, g.arenaSize)
	g.epoch++
	delete(d.graphs, g.key)
	if d.byFirst[g.first] == g {
		delete(d.byFirst, g.first)
	}
}

// exec issues one record to the engine.
func (d *Device) exec(r *record) error {
	switch r.kind {
	case recKernel:
		ka := d.kargs[:0]
		for _, a := range r.args {
			if a.buf != nil {
				ka = append(ka, karg{v: a.buf.addr + uint64(a.off), size: 8})
			} else {
				ka = append(ka, karg{v: a.v, size: a.size})
			}
		}
		d.kargs = ka
		return d.eng.launch(r.kernel, r.cfg, ka)
	case recGemm:
		g := r.gemm
		g.A = cuPtr(r.ga)
		g.B = cuPtr(r.gb)
		g.C = cuPtr(r.gc)
		return d.eng.gemm(&g)
	case recUpload:
		return d.eng.upload(r.dst.addr, r.data)
	case recMemset:
		return d.eng.memset(r.dst.addr, r.dst.size, r.val)
	case recCudnn:
		return d.eng.cudnnConv(&cudnnCall{shape: r.dnn, algo: r.algo,
			x: refAddr(r.ga), w: refAddr(r.gb), y: refAddr(r.gc), z: refAddr(r.gz), b: refAddr(r.gbias)})
	case recLt:
		c := refAddr(r.gz)
		if c == 0 {
			c = refAddr(r.gc)
		}
		return d.eng.ltMatmul(&ltCall{shape: r.lt, a: refAddr(r.ga), b: refAddr(r.gb), c: c, d: refAddr(r.gc), e: refAddr(r.gbias), sa: refAddr(r.gsa), sb: refAddr(r.gsb), beta: r.beta})
	}
	return fmt.Errorf("cuda: unknown record kind %d", r.kind)
}

// poison fills the arena and the segment's own blocks with 0xff bytes.
func (d *Device) poison(p *segPlan, arena uint64, n int64) error {
	if n > 0 {
		if err := d.eng.memset(arena, n, 0xff); err != nil {
			return err
		}
	}
	for _, b := range p.slots {
		if b.own {
			if err := d.eng.memset(b.addr, b.size, 0xff); err != nil {
				return err
			}
		}
	}
	return nil
}

// refAddr resolves a reference, 0 for none.
func refAddr(r bufRef) uint64 {
	if r.buf == nil {
		return 0
	}
	return r.buf.addr + uint64(r.off)
}
