package lora

import (
	"reflect"
	"testing"
)

func TestExtractTags(t *testing.T) {
	clean, tags, err := ExtractTags("a cat <lora:style_v2:0.8>, sitting <lora:char:1:0.25> <lora:plain>")
	if err != nil {
		t.Fatal(err)
	}
	if clean != "a cat , sitting" {
		t.Errorf("clean %q", clean)
	}
	want := []Tag{{"style_v2", 0.8, 0.8}, {"char", 1, 0.25}, {"plain", 1, 1}}
	if !reflect.DeepEqual(tags, want) {
		t.Errorf("tags %+v", tags)
	}
	for _, bad := range []string{"x <lora:a:heavy>", "x <lora:a:1:x>", "<lora: :1>"} {
		if _, _, err := ExtractTags(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if clean, tags, _ := ExtractTags("no tags (here:1.2)"); clean != "no tags (here:1.2)" || tags != nil {
		t.Errorf("untagged prompt changed: %q %v", clean, tags)
	}
}
