// Command eval measures the built-in model's prompt adherence: it generates
// one image for each of n held-out captions (captions the training never
// saw), judges each with tools/eval/judge and prints the pass rate overall and per
// property.
//
//	go run ./tools/eval -n 200 [-model DIR] [-steps 20] [-guidance 7.5] [-sampler NAME] [-sheet out.png]
package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/models"
	"github.com/kiln-project/kiln/tools/eval/judge"
	"github.com/kiln-project/kiln/tools/train/scenes"
)

func main() {
	model := flag.String("model", "", "model folder (default: the built-in model)")
	n := flag.Int("n", 200, "number of held-out captions")
	steps := flag.Int("steps", 20, "inference steps")
	guidance := flag.Float64("guidance", 7.5, "guidance scale")
	sampler := flag.String("sampler", "", "sampler (default: the model's)")
	seed := flag.Uint64("seed", 1, "caption split seed (as datagen's -seed)")
	sheet := flag.String("sheet", "", "write a contact sheet of the first 32 images to this PNG")
	verbose := flag.Bool("v", false, "print every failure")
	save := flag.String("save", "", "save every image as NNN.png in this folder")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *model, *n, *steps, *guidance, *sampler, *seed, *sheet, *save, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "eval:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, model string, n, steps int, guidance float64, sampler string, seed uint64, sheet, save string, verbose bool) error {
	if model == "" {
		p, err := models.BuiltinPath()
		if err != nil {
			return err
		}
		model = p
	}
	p, err := pipeline.Load(ctx, cpu.New(), model)
	if err != nil {
		return err
	}
	defer p.Close()
	captions := scenes.HeldOutCaptions(n, seed)
	pass := 0
	checks := map[string][2]int{} // property → (ok, total)
	var thumbs []*image.RGBA
	start := time.Now()
	for i, c := range captions {
		res, err := p.Generate(ctx, pipeline.Request{Prompt: c, Steps: steps, Guidance: guidance, Sampler: sampler, Seed: uint64(i)}, nil)
		if err != nil {
			return fmt.Errorf("caption %q: %w", c, err)
		}
		if save != "" {
			if err := writePNG(fmt.Sprintf("%s/%03d.png", save, i), res.Images[0]); err != nil {
				return err
			}
		}
		v, err := judge.Judge(c, res.Images[0])
		if err != nil {
			return err
		}
		if v.Pass {
			pass++
		} else if verbose {
			fmt.Printf("FAIL %q: %s\n", c, v)
		}
		for _, ch := range v.Checks {
			k := ch.Name
			if f := strings.Fields(k); len(f) == 3 && f[0] == "object" {
				k = "object " + f[2]
			}
			t := checks[k]
			t[1]++
			if ch.OK {
				t[0]++
			}
			checks[k] = t
		}
		if len(thumbs) < 32 {
			thumbs = append(thumbs, res.Images[0])
		}
	}
	el := time.Since(start)
	fmt.Printf("prompt adherence: %d/%d = %.1f%% (steps %d, guidance %g, sampler %q, %.2f s/image)\n",
		pass, len(captions), 100*float64(pass)/float64(len(captions)), steps, guidance, sampler, el.Seconds()/float64(len(captions)))
	keys := make([]string, 0, len(checks))
	for k := range checks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %-16s %d/%d\n", k, checks[k][0], checks[k][1])
	}
	if sheet != "" && len(thumbs) > 0 {
		s := thumbs[0].Bounds().Dx()
		out := image.NewRGBA(image.Rect(0, 0, 8*s, ((len(thumbs)+7)/8)*s))
		for i, t := range thumbs {
			draw.Draw(out, image.Rect((i%8)*s, (i/8)*s, (i%8)*s+s, (i/8)*s+s), t, image.Point{}, draw.Src)
		}
		return writePNG(sheet, out)
	}
	return nil
}

func writePNG(path string, im image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, im); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
