// Package configs embeds Kiln's default server configuration (kiln.yaml),
// the performance profiles (profiles/*.yaml) and the hardware profiles
// (hardware/*.yaml), so the binary runs without these files beside it.
package configs

import "embed"

// FS holds kiln.yaml, profiles/*.yaml and hardware/*.yaml.
//
//go:embed kiln.yaml profiles/*.yaml hardware/*.yaml
var FS embed.FS
