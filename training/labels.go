package training

import (
	"encoding/json"
	"maps"
	"slices"

	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/training/progress"
	"github.com/gpufarm/gpufarm/workload"
)

// LabelConfig is the label on a workload spec built by this package: what
// the Adapter needs to know of it, as JSON. The record keeps it, so the
// Adapter needs no state of its own across restarts.
const LabelConfig = "training.gpufarm/config"

// Roles of a labelled workload.
const (
	roleTraining = "training"
	roleServing  = "serving"
)

// config is the Adapter's view of one workload, carried in LabelConfig.
type config struct {
	Role     string            `json:"role"`
	Launcher LauncherKind      `json:"launcher,omitempty"`
	Server   ServerKind        `json:"server,omitempty"`
	Layout   checkpoint.Layout `json:"layout,omitempty"`
	Marker   string            `json:"marker,omitempty"`
	HostDir  string            `json:"hostDir,omitempty"`
	Dir      string            `json:"dir,omitempty"`
	Resume   []string          `json:"resume,omitempty"`
	Format   progress.Format   `json:"format,omitempty"`
	Metrics  string            `json:"metrics,omitempty"` // host path of a JSON-lines metrics file
	Total    int               `json:"total,omitempty"`
	Health   string            `json:"health,omitempty"` // URL of a serving workload's health endpoint
}

// label returns labels with the config added.
func (c config) label(labels map[string]string) map[string]string {
	b, _ := json.Marshal(c)
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[LabelConfig] = string(b)
	return out
}

// configOf reads the config of a spec: false when the spec is not this
// package's, an error (wrapping ErrInvalid) when its label is broken.
func configOf(s workload.Spec) (config, bool, error) {
	raw, ok := s.Labels[LabelConfig]
	if !ok {
		return config{}, false, nil
	}
	var c config
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return config{}, true, errorf(ErrInvalid, "workload %q: label %s: %v: rebuild the spec with this package", s.ID, LabelConfig, err)
	}
	switch {
	case c.Role == roleTraining && !slices.Contains(LauncherKinds, c.Launcher):
		return config{}, true, errorf(ErrInvalid, "workload %q: unknown launcher %q in label %s: want one of %v", s.ID, c.Launcher, LabelConfig, LauncherKinds)
	case c.Role == roleTraining && c.HostDir == "":
		return config{}, true, errorf(ErrInvalid, "workload %q: label %s names no checkpoint folder", s.ID, LabelConfig)
	case c.Role != roleTraining && c.Role != roleServing:
		return config{}, true, errorf(ErrInvalid, "workload %q: role %q in label %s: want %s or %s", s.ID, c.Role, LabelConfig, roleTraining, roleServing)
	}
	return c, true, nil
}

// finder reads the workload's checkpoint folder.
func (c config) finder() checkpoint.Finder {
	return checkpoint.Finder{Layout: c.Layout, Marker: c.Marker}
}
