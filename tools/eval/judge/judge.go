// Package judge decides whether an image shows what a caption of the
// built-in model's scene grammar (tools/train/scenes) asks for: the
// background colour, each object's colour and shape, and the position.
// It measures prompt adherence of generated images in tests and benchmarks.
package judge

import (
	"fmt"
	"image"
	"math"
	"sort"

	"github.com/kiln-project/kiln/tools/train/scenes"
)

// Check is one judged property.
type Check struct {
	Name string // e.g. "background", "object 1 colour"
	Want string
	Got  string
	OK   bool
}

// Verdict is the judge's decision on one image.
type Verdict struct {
	Pass   bool
	Checks []Check
}

// String lists the failed checks, or "pass".
func (v Verdict) String() string {
	if v.Pass {
		return "pass"
	}
	s := ""
	for _, c := range v.Checks {
		if !c.OK {
			if s != "" {
				s += "; "
			}
			s += fmt.Sprintf("%s: want %s, got %s", c.Name, c.Want, c.Got)
		}
	}
	return s
}

// Judge checks img against caption. A caption outside the grammar is an error.
func Judge(caption string, img image.Image) (Verdict, error) {
	scene, err := scenes.ParseCaption(caption)
	if err != nil {
		return Verdict{}, fmt.Errorf("judge: %w", err)
	}
	return JudgeScene(scene, img), nil
}

// JudgeScene checks img against a parsed scene.
func JudgeScene(scene scenes.Scene, img image.Image) Verdict {
	p := newPixels(img)
	var v Verdict
	add := func(name, want, got string) {
		v.Checks = append(v.Checks, Check{Name: name, Want: want, Got: got, OK: want == got})
	}
	plane := p.fitBackground()
	bgName := nearestColour(plane.at(0.5, 0.5))
	add("background", scene.Background, bgName)

	comps := p.components(plane)
	minArea := 0.004 * float64(p.w*p.h)
	var objs []component
	for _, c := range comps {
		if float64(c.area) >= minArea {
			objs = append(objs, c)
		}
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].area > objs[j].area })
	want := len(scene.Objects)
	add("object count", fmt.Sprint(want), fmt.Sprint(countSignificant(objs)))
	if len(objs) < want {
		v.Pass = false
		return v
	}
	objs = objs[:want]
	if want == 2 {
		sort.Slice(objs, func(i, j int) bool { return objs[i].cx < objs[j].cx })
	}
	for i, o := range scene.Objects {
		c := objs[i]
		n := fmt.Sprintf("object %d", i+1)
		add(n+" colour", o.Colour, nearestColour(c.colour))
		add(n+" shape", o.Shape, p.core(c).shape())
		if o.Position != "" {
			add(n+" position", o.Position, positionOf(c.cx/float64(p.w), c.cy/float64(p.h)))
		}
	}
	v.Pass = true
	for _, c := range v.Checks {
		v.Pass = v.Pass && c.OK
	}
	return v
}

// countSignificant counts the components at least half as large as the
// smallest expected object would be; smaller specks are noise.
func countSignificant(objs []component) int {
	if len(objs) == 0 {
		return 0
	}
	n := 0
	for _, o := range objs {
		if o.area*6 >= objs[0].area {
			n++
		}
	}
	return n
}

// positionOf names the position of a centroid given in unit coordinates.
func positionOf(x, y float64) string {
	dx, dy := x-0.5, y-0.5
	if math.Abs(dx) < 0.07 && math.Abs(dy) < 0.07 {
		return "in the center"
	}
	if math.Abs(dx) >= math.Abs(dy) {
		if dx < 0 {
			return "on the left"
		}
		return "on the right"
	}
	if dy < 0 {
		return "at the top"
	}
	return "at the bottom"
}

// nearestColour names the palette colour closest to c.
func nearestColour(c [3]float64) string {
	best, bestD := "", math.Inf(1)
	for _, p := range scenes.Palette() {
		d := 0.0
		for k := range c {
			e := c[k] - float64(p.RGB[k])
			d += e * e
		}
		if d < bestD {
			best, bestD = p.Name, d
		}
	}
	return best
}

type pixels struct {
	w, h int
	rgb  [][3]float64
}

func newPixels(img image.Image) *pixels {
	b := img.Bounds()
	p := &pixels{w: b.Dx(), h: b.Dy(), rgb: make([][3]float64, b.Dx()*b.Dy())}
	for y := 0; y < p.h; y++ {
		for x := 0; x < p.w; x++ {
			r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			p.rgb[y*p.w+x] = [3]float64{float64(r >> 8), float64(g >> 8), float64(bb >> 8)}
		}
	}
	return p
}

// plane is a per-channel linear model c(u, v) = a + b·u + c·v of the
// background over unit coordinates.
type plane [3][3]float64

func (pl plane) at(u, v float64) [3]float64 {
	var out [3]float64
	for k := range out {
		out[k] = pl[k][0] + pl[k][1]*u + pl[k][2]*v
	}
	return out
}

// fitBackground fits the background gradient to the image border, robustly:
// a first least-squares fit, then a refit on the border pixels close to it
// (objects touching the border are left out).
func (p *pixels) fitBackground() plane {
	type sample struct {
		u, v float64
		c    [3]float64
	}
	var border []sample
	for y := 0; y < p.h; y++ {
		for x := 0; x < p.w; x++ {
			if x > 1 && y > 1 && x < p.w-2 && y < p.h-2 {
				continue
			}
			border = append(border, sample{(float64(x) + 0.5) / float64(p.w), (float64(y) + 0.5) / float64(p.h), p.rgb[y*p.w+x]})
		}
	}
	// start from the per-channel median as a constant plane
	var pl plane
	for k := 0; k < 3; k++ {
		vals := make([]float64, len(border))
		for i, s := range border {
			vals[i] = s.c[k]
		}
		sort.Float64s(vals)
		pl[k][0] = vals[len(vals)/2]
	}
	for iter := 0; iter < 3; iter++ {
		var keep []sample
		for _, s := range border {
			if dist(s.c, pl.at(s.u, s.v)) < 40 {
				keep = append(keep, s)
			}
		}
		if len(keep) < 8 {
			break
		}
		// normal equations for [1 u v]
		var ata [3][3]float64
		var atb [3][3]float64
		for _, s := range keep {
			row := [3]float64{1, s.u, s.v}
			for i := 0; i < 3; i++ {
				for j := 0; j < 3; j++ {
					ata[i][j] += row[i] * row[j]
				}
				for k := 0; k < 3; k++ {
					atb[k][i] += row[i] * s.c[k]
				}
			}
		}
		for k := 0; k < 3; k++ {
			if sol, ok := solve3(ata, atb[k]); ok {
				pl[k] = sol
			}
		}
	}
	return pl
}

func solve3(a [3][3]float64, b [3]float64) ([3]float64, bool) {
	m := [3][4]float64{}
	for i := 0; i < 3; i++ {
		copy(m[i][:3], a[i][:])
		m[i][3] = b[i]
	}
	for c := 0; c < 3; c++ {
		piv := c
		for r := c + 1; r < 3; r++ {
			if math.Abs(m[r][c]) > math.Abs(m[piv][c]) {
				piv = r
			}
		}
		if math.Abs(m[piv][c]) < 1e-12 {
			return [3]float64{}, false
		}
		m[c], m[piv] = m[piv], m[c]
		for r := 0; r < 3; r++ {
			if r == c {
				continue
			}
			f := m[r][c] / m[c][c]
			for k := c; k < 4; k++ {
				m[r][k] -= f * m[c][k]
			}
		}
	}
	return [3]float64{m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]}, true
}

func dist(a, b [3]float64) float64 {
	d := 0.0
	for k := range a {
		e := a[k] - b[k]
		d += e * e
	}
	return math.Sqrt(d)
}

// component is a connected region of foreground pixels.
type component struct {
	area   int
	cx, cy float64 // centroid in pixels
	colour [3]float64
	pts    [][2]int
}

// components labels 4-connected regions of pixels that differ from the
// background model.
func (p *pixels) components(pl plane) []component {
	fg := make([]bool, p.w*p.h)
	for y := 0; y < p.h; y++ {
		for x := 0; x < p.w; x++ {
			u, v := (float64(x)+0.5)/float64(p.w), (float64(y)+0.5)/float64(p.h)
			fg[y*p.w+x] = dist(p.rgb[y*p.w+x], pl.at(u, v)) > 45
		}
	}
	seen := make([]bool, len(fg))
	var out []component
	stack := make([]int, 0, 256)
	for start := range fg {
		if !fg[start] || seen[start] {
			continue
		}
		var c component
		stack = append(stack[:0], start)
		seen[start] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := i%p.w, i/p.w
			c.pts = append(c.pts, [2]int{x, y})
			for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				if nx < 0 || ny < 0 || nx >= p.w || ny >= p.h {
					continue
				}
				j := ny*p.w + nx
				if fg[j] && !seen[j] {
					seen[j] = true
					stack = append(stack, j)
				}
			}
		}
		c.area = len(c.pts)
		chans := [3][]float64{}
		for _, pt := range c.pts {
			c.cx += float64(pt[0]) + 0.5
			c.cy += float64(pt[1]) + 0.5
			col := p.rgb[pt[1]*p.w+pt[0]]
			for k := 0; k < 3; k++ {
				chans[k] = append(chans[k], col[k])
			}
		}
		c.cx /= float64(c.area)
		c.cy /= float64(c.area)
		for k := 0; k < 3; k++ {
			sort.Float64s(chans[k])
			c.colour[k] = chans[k][len(chans[k])/2]
		}
		out = append(out, c)
	}
	return out
}

// core returns the part of a component whose colour is close to the
// component's median colour, largest connected piece only: generated images
// carry specks of other colours along edges that would distort the shape
// measures.
func (p *pixels) core(c component) component {
	in := make(map[int]bool, len(c.pts))
	for _, pt := range c.pts {
		if dist(p.rgb[pt[1]*p.w+pt[0]], c.colour) < 70 {
			in[pt[1]*p.w+pt[0]] = true
		}
	}
	var best []int
	seen := make(map[int]bool, len(in))
	for start := range in {
		if seen[start] {
			continue
		}
		piece := []int{start}
		seen[start] = true
		for k := 0; k < len(piece); k++ {
			i := piece[k]
			x, y := i%p.w, i/p.w
			for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				j := ny*p.w + nx
				if nx >= 0 && ny >= 0 && nx < p.w && ny < p.h && in[j] && !seen[j] {
					seen[j] = true
					piece = append(piece, j)
				}
			}
		}
		if len(piece) > len(best) {
			best = piece
		}
	}
	if len(best) < c.area/2 {
		return c
	}
	out := component{area: len(best), colour: c.colour}
	for _, i := range best {
		x, y := i%p.w, i/p.w
		out.pts = append(out.pts, [2]int{x, y})
		out.cx += float64(x) + 0.5
		out.cy += float64(y) + 0.5
	}
	out.cx /= float64(out.area)
	out.cy /= float64(out.area)
	return out
}

// shape classifies the component by measures that survive the soft corners
// of generated images: solidity (area over convex-hull area; stars are far
// from convex), fill (area over the circle through the farthest pixel:
// circle 1, square 2/π, triangle 0.41) and spread, the normalised second
// moment of area (circle 1/2π ≈ 0.159, square 1/6, triangle 0.192), which
// tells a rounded square from a circle.
func (c component) shape() string {
	hull := convexHull(c.pts)
	solidity := float64(c.area) / polygonArea(hull)
	var m2, r2 float64
	for _, pt := range c.pts {
		dx, dy := float64(pt[0])+0.5-c.cx, float64(pt[1])+0.5-c.cy
		d := dx*dx + dy*dy
		m2 += d
		r2 = math.Max(r2, d)
	}
	r := math.Sqrt(r2) + 0.5
	fill := float64(c.area) / (math.Pi * r * r)
	spread := m2 / (float64(c.area) * float64(c.area))
	switch {
	case solidity < 0.80:
		return "star"
	case fill < 0.585:
		return "triangle"
	case spread < 0.1615 && fill > 0.78:
		return "circle"
	default:
		return "square"
	}
}

// polygonArea is the area of a simple polygon by the shoelace formula.
func polygonArea(poly [][2]float64) float64 {
	area := 0.0
	for i := range poly {
		j := (i + 1) % len(poly)
		area += poly[i][0]*poly[j][1] - poly[j][0]*poly[i][1]
	}
	return math.Abs(area) / 2
}

// convexHull returns the convex hull of the pixel squares' corners, in order.
func convexHull(pts [][2]int) [][2]float64 {
	var corners [][2]float64
	for _, p := range pts {
		x, y := float64(p[0]), float64(p[1])
		corners = append(corners, [2]float64{x, y}, [2]float64{x + 1, y}, [2]float64{x, y + 1}, [2]float64{x + 1, y + 1})
	}
	sort.Slice(corners, func(i, j int) bool {
		if corners[i][0] != corners[j][0] {
			return corners[i][0] < corners[j][0]
		}
		return corners[i][1] < corners[j][1]
	})
	cross := func(o, a, b [2]float64) float64 {
		return (a[0]-o[0])*(b[1]-o[1]) - (a[1]-o[1])*(b[0]-o[0])
	}
	var hull [][2]float64
	for _, p := range corners {
		for len(hull) >= 2 && cross(hull[len(hull)-2], hull[len(hull)-1], p) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, p)
	}
	lower := len(hull) + 1
	for i := len(corners) - 2; i >= 0; i-- {
		p := corners[i]
		for len(hull) >= lower && cross(hull[len(hull)-2], hull[len(hull)-1], p) <= 0 {
			hull = hull[:len(hull)-1]
		}
		hull = append(hull, p)
	}
	return hull[:len(hull)-1] // the last point repeats the first
}
