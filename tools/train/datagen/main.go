// Command datagen writes the built-in model's training data: the caption
// tokenizer (vocab.json, merges.txt, tokenizer_config.json), N rendered
// scenes as raw RGB bytes (images.u8, N×size×size×3) with their captions
// (captions.txt, one per line), and the held-out evaluation captions
// (heldout.txt). Output is deterministic from -seed.
//
//	go run ./tools/train/datagen -out data -n 100000 -size 128 -seed 1
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/kiln-project/kiln/tools/train/captionvocab"
	"github.com/kiln-project/kiln/tools/train/scenes"
)

func main() {
	out := flag.String("out", "data", "output folder")
	n := flag.Int("n", 1000, "number of training images")
	size := flag.Int("size", 128, "image size in pixels")
	seed := flag.Uint64("seed", 1, "random seed")
	evalN := flag.Int("eval", 200, "number of held-out evaluation captions")
	flag.Parse()
	if err := run(*out, *n, *size, *seed, *evalN); err != nil {
		fmt.Fprintln(os.Stderr, "datagen:", err)
		os.Exit(1)
	}
}

func run(out string, n, size int, seed uint64, evalN int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	freq := map[string]int{}
	for _, w := range scenes.Words() {
		freq[w] = 1
	}
	v, err := captionvocab.Build(freq)
	if err != nil {
		return err
	}
	if err := v.WriteFiles(filepath.Join(out, "tokenizer")); err != nil {
		return err
	}

	// captions first (sequential, so the split is deterministic)
	r := rand.New(rand.NewPCG(seed, 0))
	captions := make([]scenes.Scene, 0, n)
	for len(captions) < n {
		s := scenes.Random(r, 0.3)
		if !scenes.HeldOut(s.Caption()) {
			captions = append(captions, s)
		}
	}
	eval := scenes.HeldOutCaptions(evalN, seed)

	pix := make([]byte, n*size*size*3)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				img, err := scenes.Render(captions[i], size, rand.New(rand.NewPCG(seed, uint64(i)+2)))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				dst := pix[i*size*size*3:]
				for p := 0; p < size*size; p++ {
					copy(dst[p*3:p*3+3], img.Pix[p*4:p*4+3])
				}
			}
		}()
	}
	for i := range captions {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := os.WriteFile(filepath.Join(out, "images.u8"), pix, 0o644); err != nil {
		return err
	}
	write := func(name string, lines []string) error {
		f, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return err
		}
		bw := bufio.NewWriter(f)
		for _, l := range lines {
			fmt.Fprintln(bw, l)
		}
		if err := bw.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	caps := make([]string, len(captions))
	for i, s := range captions {
		caps[i] = s.Caption()
	}
	if err := write("captions.txt", caps); err != nil {
		return err
	}
	return write("heldout.txt", eval)
}
