package sample

import "testing"

// FuzzParseConfig feeds arbitrary bytes to the config parser and, when it
// accepts them, builds every sampler from the result: neither may panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sd15Config))
	f.Add([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "use_karras_sigmas": true}`))
	f.Add([]byte(`{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2, 0.3], "timestep_spacing": "trailing"}`))
	f.Add([]byte(`{"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": true, "prediction_type": "v_prediction"}`))
	f.Add([]byte(`{"steps_offset": 999, "timestep_spacing": "leading"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		for _, name := range Names() {
			for _, steps := range []int{1, 3, 8} {
				s, err := New(cfg, name, steps, Options{})
				if err != nil {
					continue
				}
				n := len(s.Timesteps())
				x := make([]float32, 4)
				noise := func() []float32 { return []float32{0.1, -0.2, 0.3, 0.4} }
				for i := 0; i < n; i++ {
					if _, _, err := s.Step(i, []float32{0.1, 0.2, 0.3, 0.4}, x, noise); err != nil {
						break
					}
				}
			}
		}
	})
}
