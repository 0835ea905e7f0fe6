// Package pipelinetest holds helpers for tests that drive core/pipeline on
// several backends.
package pipelinetest

import (
	"testing"

	"github.com/kiln-project/kiln/core/pipeline"
)

// RunStaggered adds reqs[k] to r at step joinAt[k] and steps r until every
// job has left (at least through step lastJoin); it returns each job's
// result by its index in reqs and fails t on a job error.
func RunStaggered(t testing.TB, r *pipeline.Running, reqs []pipeline.Request, joinAt []int) map[int]*pipeline.Result {
	t.Helper()
	lastJoin := 0
	for _, at := range joinAt {
		lastJoin = max(lastJoin, at)
	}
	got := map[int]*pipeline.Result{}
	idOf := map[int]int{}
	for s := 0; s < 100 && (s <= lastJoin || r.Len() > 0); s++ {
		for k, at := range joinAt {
			if at == s {
				id, err := r.Add(pipeline.BatchJob{Request: reqs[k]}, nil)
				if err != nil {
					t.Fatal(err)
				}
				idOf[id] = k
			}
		}
		for _, f := range r.Step() {
			if f.Result.Err != nil {
				t.Fatalf("job %d: %v", idOf[f.ID], f.Result.Err)
			}
			got[idOf[f.ID]] = f.Result.Result
		}
	}
	for k := range reqs {
		if got[k] == nil {
			t.Fatalf("job %d never finished", k)
		}
	}
	return got
}
