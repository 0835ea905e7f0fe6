package events

import (
	"bytes"
	"testing"
)

func TestPreviewRoundTrip(t *testing.T) {
	p := Preview{Job: "01m80xk54x7k4xb7aswca8e1pg", Step: 7, Steps: 20, Width: 96, Height: 128, Index: 1, JPEG: []byte{0xff, 0xd8, 1, 2, 3}}
	data, err := EncodePreview(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(data[:4]) != "KPV1" || int(data[4])<<8|int(data[5]) != 16+len(p.Job) {
		t.Fatalf("header % x", data[:16])
	}
	got, err := DecodePreview(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Job != p.Job || got.Step != 7 || got.Steps != 20 || got.Width != 96 || got.Height != 128 || got.Index != 1 || !bytes.Equal(got.JPEG, p.JPEG) {
		t.Fatalf("decoded %+v", got)
	}
	for _, bad := range []Preview{{Job: ""}, {Job: "x", Step: 70000}, {Job: "x", Index: 300}} {
		if _, err := EncodePreview(bad); err == nil {
			t.Errorf("%+v encoded", bad)
		}
	}
	for _, bad := range [][]byte{nil, []byte("KPV1"), append([]byte("KPV2"), data[4:]...), data[:17]} {
		if _, err := DecodePreview(bad); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}

func TestSubjects(t *testing.T) {
	tenant, job, ok := SplitSubject(ProgressSubject("acme", "j1"))
	if !ok || tenant != "acme" || job != "j1" {
		t.Fatal("progress subject")
	}
	if _, _, ok := SplitSubject("kiln.ev.acme"); ok {
		t.Fatal("short subject split")
	}
}

func FuzzDecodePreview(f *testing.F) {
	data, _ := EncodePreview(Preview{Job: "job", Step: 1, Steps: 2, Width: 3, Height: 4, JPEG: []byte{1, 2}})
	f.Add(data)
	f.Add([]byte("KPV1\x00\x10"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePreview(b)
		if err != nil {
			return
		}
		again, err := EncodePreview(p)
		if err != nil {
			return // e.g. a header longer than needed
		}
		q, err := DecodePreview(again)
		if err != nil || q.Job != p.Job || !bytes.Equal(q.JPEG, p.JPEG) {
			t.Fatalf("re-encoding changed the frame")
		}
	})
}
