package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress draws a one-line progress bar. The zero value and nil draw
// nothing.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	total int
	done  int
	desc  string
	began time.Time
	last  time.Time
}

// NewProgress draws on w (a terminal).
func NewProgress(w io.Writer) *Progress { return &Progress{w: w} }

func (p *Progress) start(total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.total, p.done, p.began = total, 0, time.Now()
	p.mu.Unlock()
	p.draw(true)
}

func (p *Progress) describe(s string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.desc = s
	p.mu.Unlock()
	p.draw(true)
}

func (p *Progress) add(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.done = min(p.total, p.done+n)
	p.mu.Unlock()
	p.draw(false)
}

func (p *Progress) finish() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	p.done = p.total
	p.mu.Unlock()
	p.draw(true)
	fmt.Fprintln(p.w)
}

func (p *Progress) draw(force bool) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	frac := 0.0
	if p.total > 0 {
		frac = float64(p.done) / float64(p.total)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	el := now.Sub(p.began).Round(time.Second)
	desc := p.desc
	if len(desc) > 48 {
		desc = desc[:48]
	}
	fmt.Fprintf(p.w, "\r[%s] %3.0f%% %6s  %-48s", bar, 100*frac, el, desc)
}
