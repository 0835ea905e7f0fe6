package vae

import (
	"context"
	"testing"
)

// BenchmarkFixtureDecode times one decode of the sd15-tiny VAE: a 16×16
// latent to a 64×64 image.
func BenchmarkFixtureDecode(b *testing.B) {
	m, ref := loadFixture(b)
	z, zs := refTensor(b, ref, "vae/dec_in")
	for b.Loop() {
		if _, _, err := m.Decode(context.Background(), z, zs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFixtureDecodeTiled is BenchmarkFixtureDecode through
// DecodeTiled with 32-pixel tiles.
func BenchmarkFixtureDecodeTiled(b *testing.B) {
	m, ref := loadFixture(b)
	z, zs := refTensor(b, ref, "vae/dec_in")
	for b.Loop() {
		if _, _, err := m.DecodeTiled(context.Background(), z, zs, TileOptions{Tile: 32}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFixtureEncode times one encode of a 64×64 image.
func BenchmarkFixtureEncode(b *testing.B) {
	m, ref := loadFixture(b)
	img, is := refTensor(b, ref, "vae/enc_in")
	for b.Loop() {
		if _, _, _, err := m.Encode(context.Background(), img, is); err != nil {
			b.Fatal(err)
		}
	}
}
