package sample

import (
	"fmt"
	"strings"
)

// A1111Name is how AUTOMATIC1111 (1.9 and later) names a sampler: a
// sampler ("DPM++ 2M") and a schedule type ("Karras"), which it writes as
// "Sampler" and "Schedule type" in PNG parameters and takes as
// sampler_name and scheduler in its API.
type A1111Name struct {
	// Sampler is the sampler's display name ("Euler a", "DPM++ 2M").
	Sampler string
	// Scheduler is the schedule type's API name ("automatic", "karras").
	Scheduler string
}

// ScheduleLabel is the schedule type's display name ("Automatic",
// "Karras").
func (n A1111Name) ScheduleLabel() string { return scheduleLabels[n.Scheduler] }

// a1111Names maps Kiln's sampler names to AUTOMATIC1111's. "automatic" is
// the sampler's own sigma schedule, which for these samplers is the
// model's discrete timestep schedule as diffusers builds it.
var a1111Names = map[string]A1111Name{
	"euler":               {"Euler", "automatic"},
	"euler_karras":        {"Euler", "karras"},
	"euler_a":             {"Euler a", "automatic"},
	"heun":                {"Heun", "automatic"},
	"heun_karras":         {"Heun", "karras"},
	"ddim":                {"DDIM", "automatic"},
	"ddpm":                {"DDPM", "automatic"},
	"dpmpp_2m":            {"DPM++ 2M", "automatic"},
	"dpmpp_2m_karras":     {"DPM++ 2M", "karras"},
	"dpmpp_2m_sde":        {"DPM++ 2M SDE", "automatic"},
	"dpmpp_2m_sde_karras": {"DPM++ 2M SDE", "karras"},
	"unipc":               {"UniPC", "automatic"},
	"lcm":                 {"LCM", "automatic"},
	"pndm":                {"PLMS", "automatic"},
}

// scheduleLabels are the schedule types Kiln implements, by API name.
var scheduleLabels = map[string]string{"automatic": "Automatic", "karras": "Karras"}

// A1111 returns AUTOMATIC1111's name of a Kiln sampler; ok is false for
// an unknown name.
func A1111(name string) (n A1111Name, ok bool) {
	n, ok = a1111Names[name]
	return n, ok
}

// Schedulers lists the schedule types (API name and label) Kiln
// implements.
func Schedulers() [][2]string {
	return [][2]string{{"automatic", "Automatic"}, {"karras", "Karras"}}
}

// A1111Samplers lists AUTOMATIC1111's sampler names that map to Kiln
// samplers, sorted as Kiln's names are, each once.
func A1111Samplers() []string {
	seen := map[string]bool{}
	var out []string
	for _, name := range Names() {
		s := a1111Names[name].Sampler
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// FromA1111 finds the Kiln sampler for AUTOMATIC1111's sampler and
// scheduler names. It accepts the display names in any case, the legacy
// combined names ("DPM++ 2M Karras", from before schedulers were separate),
// the schedule's label or API name, an empty or "Automatic" scheduler, and
// Kiln's own sampler names. An empty sampler returns "" (the default).
func FromA1111(sampler, scheduler string) (string, error) {
	sampler, scheduler = strings.TrimSpace(sampler), strings.ToLower(strings.TrimSpace(scheduler))
	if sampler == "" {
		if scheduler != "" && scheduler != "automatic" {
			return "", fmt.Errorf("scheduler %q needs a sampler_name", scheduler)
		}
		return "", nil
	}
	if _, ok := samplers[sampler]; ok && (scheduler == "" || scheduler == "automatic") {
		return sampler, nil
	}
	if scheduler == "" {
		scheduler = "automatic"
	}
	if base, ok := strings.CutSuffix(sampler, " Karras"); ok {
		if scheduler != "automatic" && scheduler != "karras" {
			return "", fmt.Errorf("sampler %q already names the Karras schedule; scheduler %q contradicts it", sampler, scheduler)
		}
		sampler, scheduler = base, "karras"
	}
	if _, ok := scheduleLabels[scheduler]; !ok {
		return "", fmt.Errorf("unsupported scheduler %q; Kiln implements automatic and karras", scheduler)
	}
	var known []string
	for _, name := range Names() {
		n := a1111Names[name]
		if strings.EqualFold(n.Sampler, sampler) && n.Scheduler == scheduler {
			return name, nil
		}
	}
	for _, name := range Names() {
		n := a1111Names[name]
		if strings.EqualFold(n.Sampler, sampler) {
			known = append(known, n.Scheduler)
		}
	}
	if len(known) > 0 {
		return "", fmt.Errorf("sampler %q supports the schedules %s, not %q", sampler, strings.Join(known, ", "), scheduler)
	}
	return "", fmt.Errorf("unsupported sampler %q; choose one of %s", sampler, strings.Join(A1111Samplers(), ", "))
}
