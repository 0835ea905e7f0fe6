// Package scenes generates the procedural training data of Kiln's built-in
// model: coloured shapes on coloured backgrounds, each with a caption from a
// small grammar. Everything is deterministic from a seed.
//
// Caption grammar:
//
//	scene   = object ["and" object] "on" article colour "background"
//	object  = article [size] colour shape [position]   (positions only in one-object scenes)
//	article = "a" | "an"
//	size    = "small" | "large"
//	position= "on the left" | "on the right" | "at the top" | "at the bottom" | "in the center"
//
// In two-object scenes the first object named stands on the left and the
// second on the right.
package scenes

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Colour is a named palette colour.
type Colour struct {
	Name string
	RGB  [3]uint8
}

// Palette lists the colours of the grammar; the judge classifies against it.
func Palette() []Colour {
	return []Colour{
		{"red", [3]uint8{215, 35, 35}},
		{"green", [3]uint8{40, 165, 60}},
		{"blue", [3]uint8{40, 75, 220}},
		{"yellow", [3]uint8{240, 215, 40}},
		{"orange", [3]uint8{245, 135, 25}},
		{"purple", [3]uint8{135, 45, 175}},
		{"white", [3]uint8{240, 240, 240}},
		{"black", [3]uint8{20, 20, 20}},
	}
}

// Shapes lists the shape names of the grammar.
func Shapes() []string { return []string{"circle", "square", "triangle", "star"} }

// Positions lists the position phrases of the grammar.
func Positions() []string {
	return []string{"on the left", "on the right", "at the top", "at the bottom", "in the center"}
}

// Sizes lists the size words of the grammar; "" means unspecified (medium).
func Sizes() []string { return []string{"", "small", "large"} }

// Object is one shape of a scene.
type Object struct {
	Colour   string
	Shape    string
	Size     string // "", "small" or "large"
	Position string // one of Positions, or "" (two-object scenes, or unspecified)
}

// Scene is a caption's content: one or two objects on a background.
type Scene struct {
	Background string
	Objects    []Object
}

// Caption renders the scene as a sentence of the grammar.
func (s Scene) Caption() string {
	var b strings.Builder
	for i, o := range s.Objects {
		if i > 0 {
			b.WriteString(" and ")
		}
		if o.Size != "" {
			b.WriteString(article(o.Size) + " " + o.Size + " ")
		} else {
			b.WriteString(article(o.Colour) + " ")
		}
		b.WriteString(o.Colour + " " + o.Shape)
		if o.Position != "" {
			b.WriteString(" " + o.Position)
		}
	}
	b.WriteString(" on " + article(s.Background) + " " + s.Background + " background")
	return b.String()
}

// article returns "an" before a word starting with a vowel, else "a".
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// ParseCaption reads a caption of the grammar back into a scene.
func ParseCaption(caption string) (Scene, error) {
	words := strings.Fields(strings.ToLower(strings.TrimSpace(caption)))
	var s Scene
	i := 0
	expect := func(w string) error {
		if i >= len(words) || words[i] != w {
			got := "end of caption"
			if i < len(words) {
				got = fmt.Sprintf("%q", words[i])
			}
			return fmt.Errorf("scenes: caption %q: want %q at word %d, got %s", caption, w, i+1, got)
		}
		i++
		return nil
	}
	isColour := func(w string) bool {
		for _, c := range Palette() {
			if c.Name == w {
				return true
			}
		}
		return false
	}
	isShape := func(w string) bool {
		for _, sh := range Shapes() {
			if sh == w {
				return true
			}
		}
		return false
	}
	for {
		if i < len(words) && words[i] == "an" {
			words[i] = "a"
		}
		if err := expect("a"); err != nil {
			return Scene{}, err
		}
		if i < len(words) && isColour(words[i]) && i+1 < len(words) && words[i+1] == "background" {
			s.Background = words[i]
			i += 2
			break
		}
		var o Object
		if i < len(words) && (words[i] == "small" || words[i] == "large") {
			o.Size = words[i]
			i++
		}
		if i >= len(words) || !isColour(words[i]) {
			return Scene{}, fmt.Errorf("scenes: caption %q: want a colour at word %d", caption, i+1)
		}
		o.Colour = words[i]
		i++
		if i >= len(words) || !isShape(words[i]) {
			return Scene{}, fmt.Errorf("scenes: caption %q: want a shape at word %d", caption, i+1)
		}
		o.Shape = words[i]
		i++
		for _, p := range Positions() {
			pw := strings.Fields(p)
			if i+len(pw) <= len(words) && strings.Join(words[i:i+len(pw)], " ") == p {
				o.Position = p
				i += len(pw)
				break
			}
		}
		s.Objects = append(s.Objects, o)
		if i < len(words) && words[i] == "and" {
			i++
			continue
		}
		if err := expect("on"); err != nil {
			return Scene{}, err
		}
	}
	if i != len(words) {
		return Scene{}, fmt.Errorf("scenes: caption %q: unexpected %q after the background", caption, words[i])
	}
	if len(s.Objects) == 0 || len(s.Objects) > 2 {
		return Scene{}, fmt.Errorf("scenes: caption %q: want one or two objects", caption)
	}
	return s, nil
}

// Random draws a scene: one object (with optional size and position) or,
// with probability twoProb, two objects side by side.
func Random(r *rand.Rand, twoProb float64) Scene {
	pal := Palette()
	bg := pal[r.IntN(len(pal))].Name
	pick := func(exclude ...string) string {
		for {
			c := pal[r.IntN(len(pal))].Name
			ok := true
			for _, e := range exclude {
				if c == e {
					ok = false
				}
			}
			if ok {
				return c
			}
		}
	}
	shapes := Shapes()
	s := Scene{Background: bg}
	if r.Float64() < twoProb {
		a := Object{Colour: pick(bg), Shape: shapes[r.IntN(len(shapes))]}
		b := Object{Colour: pick(bg), Shape: shapes[r.IntN(len(shapes))]}
		s.Objects = []Object{a, b}
		return s
	}
	o := Object{Colour: pick(bg), Shape: shapes[r.IntN(len(shapes))]}
	o.Size = Sizes()[r.IntN(3)]
	if r.IntN(6) > 0 { // most single objects name a position
		o.Position = Positions()[r.IntN(len(Positions()))]
	}
	s.Objects = []Object{o}
	return s
}

// placed is an object with its geometry in unit coordinates (0..1).
type placed struct {
	colour   [3]float64
	shape    string
	cx, cy   float64
	radius   float64 // circumradius
	rotation float64
}

// Render draws the scene at size×size pixels. The random source decides
// jitter, rotation, exact placement and the background gradient, so the same
// scene renders differently under different sources.
func Render(s Scene, size int, r *rand.Rand) (*image.RGBA, error) {
	if size < 16 {
		return nil, fmt.Errorf("scenes: size %d too small", size)
	}
	bg, ok := colourOf(s.Background)
	if !ok {
		return nil, fmt.Errorf("scenes: unknown background colour %q", s.Background)
	}
	jitter := func(c [3]uint8) [3]float64 {
		var out [3]float64
		for i := range c {
			out[i] = clamp255(float64(c[i]) + (r.Float64()*2-1)*12)
		}
		return out
	}
	bgc := jitter(bg)
	// A gentle linear gradient in a random direction.
	gAngle := r.Float64() * 2 * math.Pi
	gAmp := r.Float64() * 22
	gx, gy := math.Cos(gAngle)*gAmp, math.Sin(gAngle)*gAmp

	var objs []placed
	for i, o := range s.Objects {
		c, ok := colourOf(o.Colour)
		if !ok {
			return nil, fmt.Errorf("scenes: unknown colour %q", o.Colour)
		}
		p := placed{colour: jitter(c), shape: o.Shape, rotation: r.Float64() * 2 * math.Pi}
		switch o.Shape {
		case "circle", "square", "triangle", "star":
		default:
			return nil, fmt.Errorf("scenes: unknown shape %q", o.Shape)
		}
		j := func() float64 { return (r.Float64()*2 - 1) * 0.04 }
		if len(s.Objects) == 2 {
			p.radius = 0.14 + r.Float64()*0.04
			p.cx, p.cy = 0.27+0.46*float64(i)+j(), 0.5+j()*2
		} else {
			switch o.Size {
			case "small":
				p.radius = 0.10 + r.Float64()*0.03
			case "large":
				p.radius = 0.26 + r.Float64()*0.03
			default:
				p.radius = 0.17 + r.Float64()*0.03
			}
			// offsets keep every object inside the frame
			off := map[string]float64{"small": 0.28, "": 0.25, "large": 0.15}[o.Size]
			p.cx, p.cy = 0.5+j(), 0.5+j()
			switch o.Position {
			case "on the left":
				p.cx = 0.5 - off + j()
			case "on the right":
				p.cx = 0.5 + off + j()
			case "at the top":
				p.cy = 0.5 - off + j()
			case "at the bottom":
				p.cy = 0.5 + off + j()
			case "", "in the center":
			default:
				return nil, fmt.Errorf("scenes: unknown position %q", o.Position)
			}
		}
		objs = append(objs, p)
	}

	img := image.NewRGBA(image.Rect(0, 0, size, size))
	const ss = 4 // supersampling per axis for anti-aliased edges
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			var acc [3]float64
			for sy := 0; sy < ss; sy++ {
				for sx := 0; sx < ss; sx++ {
					u := (float64(x) + (float64(sx)+0.5)/ss) / float64(size)
					v := (float64(y) + (float64(sy)+0.5)/ss) / float64(size)
					col := [3]float64{bgc[0] + gx*(u-0.5) + gy*(v-0.5), bgc[1] + gx*(u-0.5) + gy*(v-0.5), bgc[2] + gx*(u-0.5) + gy*(v-0.5)}
					for _, o := range objs {
						if inside(o, u, v) {
							col = o.colour
						}
					}
					for k := range acc {
						acc[k] += col[k]
					}
				}
			}
			n := float64(ss * ss)
			img.SetRGBA(x, y, color.RGBA{uint8(clamp255(acc[0]/n) + 0.5), uint8(clamp255(acc[1]/n) + 0.5), uint8(clamp255(acc[2]/n) + 0.5), 255})
		}
	}
	return img, nil
}

func colourOf(name string) ([3]uint8, bool) {
	for _, c := range Palette() {
		if c.Name == name {
			return c.RGB, true
		}
	}
	return [3]uint8{}, false
}

func clamp255(v float64) float64 { return math.Max(0, math.Min(255, v)) }

// inside reports whether unit point (u, v) lies in object o.
func inside(o placed, u, v float64) bool {
	dx, dy := u-o.cx, v-o.cy
	if dx*dx+dy*dy > o.radius*o.radius {
		return false
	}
	if o.shape == "circle" {
		return true
	}
	// rotate the point into the shape's frame
	c, s := math.Cos(-o.rotation), math.Sin(-o.rotation)
	x, y := dx*c-dy*s, dx*s+dy*c
	var poly [][2]float64
	switch o.shape {
	case "square":
		h := o.radius / math.Sqrt2
		return math.Abs(x) <= h && math.Abs(y) <= h
	case "triangle":
		poly = regular(3, o.radius, 0)
	case "star":
		poly = star(5, o.radius, o.radius*0.45)
	}
	return inPolygon(poly, x, y)
}

func regular(n int, r, phase float64) [][2]float64 {
	pts := make([][2]float64, n)
	for i := range pts {
		a := phase - math.Pi/2 + 2*math.Pi*float64(i)/float64(n)
		pts[i] = [2]float64{r * math.Cos(a), r * math.Sin(a)}
	}
	return pts
}

func star(n int, outer, inner float64) [][2]float64 {
	pts := make([][2]float64, 2*n)
	for i := range pts {
		rad := outer
		if i%2 == 1 {
			rad = inner
		}
		a := -math.Pi/2 + math.Pi*float64(i)/float64(n)
		pts[i] = [2]float64{rad * math.Cos(a), rad * math.Sin(a)}
	}
	return pts
}

// inPolygon is the even-odd rule point-in-polygon test.
func inPolygon(p [][2]float64, x, y float64) bool {
	in := false
	for i, j := 0, len(p)-1; i < len(p); j, i = i, i+1 {
		xi, yi, xj, yj := p[i][0], p[i][1], p[j][0], p[j][1]
		if (yi > y) != (yj > y) && x < (xj-xi)*(y-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// HeldOut reports whether a caption belongs to the evaluation split, which
// training never sees: about one caption in ten, chosen by a hash of its
// text so that the split is stable.
func HeldOut(caption string) bool {
	h := uint32(2166136261)
	for i := 0; i < len(caption); i++ {
		h ^= uint32(caption[i])
		h *= 16777619
	}
	return h%10 == 0
}

// Words returns every word of the grammar, the vocabulary of captions.
func Words() []string {
	set := map[string]bool{"a": true, "an": true, "and": true, "on": true, "background": true}
	for _, c := range Palette() {
		set[c.Name] = true
	}
	for _, s := range append(append(Shapes(), Positions()...), Sizes()...) {
		for _, w := range strings.Fields(s) {
			set[w] = true
		}
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// HeldOutCaptions returns n distinct captions of the evaluation split, drawn
// deterministically from seed; training data never contains them.
func HeldOutCaptions(n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 1))
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		c := Random(r, 0.3).Caption()
		if HeldOut(c) && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}
