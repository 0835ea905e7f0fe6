package worker

import (
	"context"
	"errors"
	"fmt"
	"image"
	"reflect"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/jobs"
)

// oomModel runs batches of at most fit images; larger ones fail every
// item with an out-of-memory error, as a device would.
type oomModel struct {
	fit   int
	calls [][]int // images per item of each call
	bad   string  // prompt that fails for another reason
}

func (m *oomModel) run(_ context.Context, items []BatchItem, onProgress func(int, Progress)) []BatchResult {
	n := 0
	var shape []int
	for _, it := range items {
		n += it.Request.N
		shape = append(shape, it.Request.N)
	}
	m.calls = append(m.calls, shape)
	out := make([]BatchResult, len(items))
	for i, it := range items {
		switch {
		case n > m.fit:
			out[i].Err = &backend.Error{Op: "Conv2D", Err: fmt.Errorf("allocating 512 MiB: %w", backend.ErrOutOfMemory)}
		case it.Request.Prompt == m.bad:
			out[i].Err = errors.New("bad prompt")
		default:
			r := &Result{}
			for k := range it.Request.N {
				r.Seeds = append(r.Seeds, it.Request.Seed+uint64(k))
				r.Images = append(r.Images, image.NewGray(image.Rect(0, 0, 1, 1)))
			}
			onProgress(i, Progress{Step: 1, Steps: 1})
			out[i].Result = r
		}
	}
	return out
}

func TestRunUnderMemorySplitsByImagesKeepingSeeds(t *testing.T) {
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	m := &oomModel{fit: 2, bad: "bad"}
	items := []BatchItem{
		{Ctx: context.Background(), Request: Request{Prompt: "a", N: 3, Seed: 10, Width: 64, Height: 64}},
		{Ctx: context.Background(), Request: Request{Prompt: "bad", N: 1, Seed: 20, Width: 64, Height: 64}},
		{Ctx: context.Background(), Request: Request{Prompt: "c", N: 1, Seed: 30, Width: 64, Height: 64}},
	}
	progress := map[int]int{}
	out, rep := RunUnderMemory(context.Background(), MemoryRun{Manager: mgr, Model: "sd15"}, items, m.run,
		func(i int, _ Progress) { progress[i]++ })
	// 5 images → 3 → 2 fit: chunks [a a] [a bad] [c].
	if rep.Splits != 2 || rep.Chunk != 2 || !rep.Recovered() {
		t.Fatalf("report %+v (calls %v)", rep, m.calls)
	}
	if want := [][]int{{3, 1, 1}, {3}, {2}, {1, 1}, {1}}; !reflect.DeepEqual(m.calls, want) {
		t.Fatalf("calls %v, want %v", m.calls, want)
	}
	if out[0].Err != nil || !reflect.DeepEqual(out[0].Result.Seeds, []uint64{10, 11, 12}) || len(out[0].Result.Images) != 3 {
		t.Fatalf("item 0: %+v", out[0])
	}
	if out[1].Err == nil || out[1].Err.Error() != "bad prompt" {
		t.Fatalf("item 1: %v", out[1].Err)
	}
	if out[2].Err != nil || !reflect.DeepEqual(out[2].Result.Seeds, []uint64{30}) {
		t.Fatalf("item 2: %+v", out[2])
	}
	if progress[0] != 2 || progress[2] != 1 || progress[1] != 0 {
		t.Fatalf("progress per item %v", progress)
	}
	// A split run records no peak for the whole batch.
	if _, measured := mgr.ActivationBytes(memory.Batch{Model: "sd15", Images: 5, Width: 64, Height: 64}); measured {
		t.Fatal("peak recorded for a batch that had to be split")
	}
	if mgr.FreeBytes() != 1<<40 {
		t.Fatal("reservation not released")
	}
}

func TestRunUnderMemoryFreesOthersThenFailsClearly(t *testing.T) {
	m := &oomModel{fit: 0}
	freed := 0
	items := []BatchItem{{Ctx: context.Background(), Request: Request{Prompt: "a", N: 2, Seed: 1}}}
	out, rep := RunUnderMemory(context.Background(), MemoryRun{Model: "x", FreeOthers: func(context.Context) error {
		freed++
		return nil
	}}, items, m.run, nil)
	if freed != 1 || !rep.FreedOthers || !errors.Is(out[0].Err, memory.ErrOutOfMemory) {
		t.Fatalf("freed %d report %+v err %v", freed, rep, out[0].Err)
	}
	// Freeing the others is what makes it fit.
	m2 := &oomModel{fit: 0}
	out, rep = RunUnderMemory(context.Background(), MemoryRun{Model: "x", FreeOthers: func(context.Context) error {
		m2.fit = 1
		return nil
	}}, items, m2.run, nil)
	if out[0].Err != nil || len(out[0].Result.Images) != 2 || !rep.FreedOthers {
		t.Fatalf("after freeing: %+v %+v", out[0], rep)
	}
	// Without a manager and with room, one call runs everything.
	m3 := &oomModel{fit: 10}
	out, rep = RunUnderMemory(context.Background(), MemoryRun{}, items, m3.run, nil)
	if len(m3.calls) != 1 || rep.Recovered() || out[0].Err != nil {
		t.Fatalf("plain run: calls %v report %+v", m3.calls, rep)
	}
}

func TestUnderBudgetCapsFreeMemory(t *testing.T) {
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 6 << 30})
	if err != nil {
		t.Fatal(err)
	}
	mgr.Place("sd15", memory.GPU, []memory.Component{{Kind: "unet", Bytes: 2 << 30}})
	w := &Worker{o: Options{Memory: mgr}}
	p := jobs.Params{Model: "sd15", Width: 512, Height: 512}
	// The backend sees 100 GiB free on the device; the budget leaves 4.
	if got := w.underBudget(p, 2, 100<<30, 1<<30); got != 4<<30 {
		t.Fatalf("free %d, want the budget's 4 GiB", got)
	}
	if got, measured := mgr.ActivationBytes(memory.Batch{Model: "sd15", Images: 2, Width: 512, Height: 512}); !measured || got != 1<<30 {
		t.Fatalf("step peak not recorded: %d %v", got, measured)
	}
	if got := w.underBudget(p, 2, 1<<30, 0); got != 1<<30 {
		t.Fatalf("free %d: the backend's smaller figure wins", got)
	}
	if got := (&Worker{}).underBudget(p, 2, 5, 0); got != 5 {
		t.Fatalf("without a manager: %d", got)
	}
}

func TestWindowDemandCountsJobsPerModel(t *testing.T) {
	q := &window{}
	for _, m := range []string{"a", "b", "a"} {
		q.pending = append(q.pending, pendingMsg{Pending: Pending{Job: &jobs.Job{Params: jobs.Params{Model: m}}}})
	}
	if q.demand("a") != 2 || q.demand("b") != 1 || q.demand("c") != 0 {
		t.Fatalf("demand a=%d b=%d c=%d", q.demand("a"), q.demand("b"), q.demand("c"))
	}
}

// oomEngine's model runs at most one image per GenerateBatch call; more
// fail with out of memory, as a small GPU would.
type oomEngine struct{ batchEngine }

func (e *oomEngine) Load(ctx context.Context, m catalog.Model) (Model, error) {
	return &oomBatchModel{batchModel{e: &e.batchEngine}}, nil
}

type oomBatchModel struct{ batchModel }

func (m *oomBatchModel) GenerateBatch(ctx context.Context, items []BatchItem, onProgress func(int, Progress)) []BatchResult {
	n := 0
	for _, it := range items {
		n += it.Request.N
	}
	if n > 1 {
		out := make([]BatchResult, len(items))
		for i := range out {
			out[i].Err = fmt.Errorf("allocating: %w", backend.ErrOutOfMemory)
		}
		return out
	}
	return m.batchModel.GenerateBatch(ctx, items, onProgress)
}

// A job whose batch runs out of memory succeeds by splitting, and its
// record says so.
func TestJobRecordReportsMemoryRecovery(t *testing.T) {
	e := newEnv(t, 5*time.Second, 3)
	mgr, err := memory.New(memory.Config{Name: "test", Budget: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	w := e.worker(t, &oomEngine{}, "w1", time.Second, func(o *Options) { o.Memory = mgr })
	run(t, w)
	j := e.submit(t, "two images", 2)
	r := e.waitStatus(t, j, jobs.StatusSucceeded)
	if len(r.Images) != 2 || r.Memory == nil || r.Memory.Splits != 1 || r.Memory.Chunk != 1 {
		t.Fatalf("record: images %d memory %+v", len(r.Images), r.Memory)
	}
	if r.Images[1].Seed != r.Images[0].Seed+1 {
		t.Fatalf("seeds %d, %d: the split changed them", r.Images[0].Seed, r.Images[1].Seed)
	}
}
