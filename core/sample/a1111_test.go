package sample

import "testing"

func TestA1111NamesCoverEverySampler(t *testing.T) {
	for _, name := range Names() {
		n, ok := A1111(name)
		if !ok || n.Sampler == "" || n.ScheduleLabel() == "" {
			t.Fatalf("%s has no AUTOMATIC1111 name: %+v", name, n)
		}
		back, err := FromA1111(n.Sampler, n.ScheduleLabel())
		if err != nil || back != name {
			t.Errorf("%s -> %+v -> %q, %v", name, n, back, err)
		}
	}
}

func TestFromA1111(t *testing.T) {
	for _, c := range []struct{ sampler, scheduler, want string }{
		{"DPM++ 2M Karras", "", "dpmpp_2m_karras"},
		{"DPM++ 2M", "Karras", "dpmpp_2m_karras"},
		{"DPM++ 2M", "karras", "dpmpp_2m_karras"},
		{"DPM++ 2M", "Automatic", "dpmpp_2m"},
		{"Euler a", "", "euler_a"},
		{"euler a", "automatic", "euler_a"},
		{"euler_a", "", "euler_a"},
		{"PLMS", "", "pndm"},
		{"", "", ""},
	} {
		got, err := FromA1111(c.sampler, c.scheduler)
		if err != nil || got != c.want {
			t.Errorf("FromA1111(%q, %q) = %q, %v; want %q", c.sampler, c.scheduler, got, err, c.want)
		}
	}
	for _, c := range [][2]string{{"DPM++ 3M SDE", ""}, {"Euler", "exponential"}, {"Euler a", "karras"}, {"DPM++ 2M Karras", "uniform"}, {"", "karras"}} {
		if got, err := FromA1111(c[0], c[1]); err == nil {
			t.Errorf("FromA1111(%q, %q) = %q, want an error", c[0], c[1], got)
		}
	}
}
