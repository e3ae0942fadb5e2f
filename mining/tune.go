package mining

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
)

// Profile is a mining tune for one GPU model and algorithm: a power limit
// and locked SM clocks, the settings mining OSes apply per card. Zero
// fields leave the setting alone.
//
// Memory clock offsets, the other half of a memory-hard tune, need a
// control gpu.Manager does not have yet; they are not part of a profile.
type Profile struct {
	// Model is the GPU's name as gpu.Device.Name reports it; "NVIDIA " and
	// "GeForce " are ignored and case does not matter ("RTX 3080" matches
	// "NVIDIA GeForce RTX 3080").
	Model string
	// Algorithm is the SDK's algorithm name ("ethash"); "" matches any.
	Algorithm string
	// PowerLimitW must be within the model's allowed range.
	PowerLimitW float64
	// MinClockMHz and MaxClockMHz lock the SM clock; both or neither.
	MinClockMHz, MaxClockMHz int
}

// normModel is a model name without vendor prefixes, lower case.
func normModel(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "nvidia ")
	n = strings.TrimPrefix(n, "geforce ")
	return n
}

// Tuner applies profiles through a gpu.Manager and restores the GPU's
// defaults. Safe for concurrent use.
type Tuner struct {
	gpus     *gpu.Manager
	profiles []Profile
	log      *slog.Logger
}

// NewTuner checks the profiles against the node's GPUs: a power limit
// outside the range of a GPU of the profile's model, or a bad clock range,
// is an ErrInvalid naming the profile's field. log may be nil.
func NewTuner(gpus *gpu.Manager, profiles []Profile, log *slog.Logger) (*Tuner, error) {
	if gpus == nil {
		return nil, fmt.Errorf("%w: NewTuner: nil gpu.Manager", ErrInvalid)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for i, p := range profiles {
		bad := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("Profiles[%d].%s: "+format, append([]any{i, field}, args...)...))
		}
		if normModel(p.Model) == "" {
			bad("Model", "empty: name the GPU model, e.g. \"RTX 3080\"")
		}
		if p.PowerLimitW < 0 {
			bad("PowerLimitW", "%g W is negative", p.PowerLimitW)
		}
		if (p.MinClockMHz == 0) != (p.MaxClockMHz == 0) || p.MinClockMHz < 0 || p.MaxClockMHz < p.MinClockMHz {
			bad("MinClockMHz", "%d-%d MHz: want 0 < min <= max, or both 0", p.MinClockMHz, p.MaxClockMHz)
		}
		for _, d := range gpus.Devices() {
			if normModel(d.Name) != normModel(p.Model) || p.PowerLimitW == 0 || !d.PowerLimit.Valid {
				continue
			}
			if lim := d.PowerLimit.Value; !lim.Contains(p.PowerLimitW) {
				bad("PowerLimitW", "%g W is outside %g-%g W, the range of %s (GPU %d)", p.PowerLimitW, lim.MinW, lim.MaxW, d.Name, d.Index)
				break
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: mining profiles: %w", ErrInvalid, errors.Join(errs...))
	}
	return &Tuner{gpus: gpus, profiles: append([]Profile(nil), profiles...), log: log}, nil
}

// Profile returns the profile for a GPU model and algorithm: an exact
// algorithm match before one for any algorithm.
func (t *Tuner) Profile(model, algorithm string) (Profile, bool) {
	var any Profile
	found := false
	for _, p := range t.profiles {
		if normModel(p.Model) != normModel(model) {
			continue
		}
		if p.Algorithm == algorithm {
			return p, true
		}
		if p.Algorithm == "" && !found {
			any, found = p, true
		}
	}
	return any, found
}

// Apply sets the profile for d and algorithm, if there is one, and
// reports it. What the GPU cannot do (gpu.ErrUnsupported) is skipped and
// logged; other failures are returned, after the GPU's defaults are put
// back.
func (t *Tuner) Apply(ctx context.Context, d gpu.Device, algorithm string) (Profile, bool, error) {
	p, ok := t.Profile(d.Name, algorithm)
	if !ok {
		return Profile{}, false, nil
	}
	var errs []error
	if p.PowerLimitW > 0 {
		if err := t.gpus.SetPowerLimit(ctx, d.UUID, p.PowerLimitW); errors.Is(err, gpu.ErrUnsupported) {
			t.log.Info("mining tune: power limit not supported", "gpu", d.Index, "uuid", d.UUID, "err", err)
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	if p.MaxClockMHz > 0 {
		if err := t.gpus.LockClocks(ctx, d.UUID, p.MinClockMHz, p.MaxClockMHz); errors.Is(err, gpu.ErrUnsupported) {
			t.log.Info("mining tune: clock lock not supported", "gpu", d.Index, "uuid", d.UUID, "err", err)
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if rerr := t.gpus.RestoreDefaults(ctx, d.UUID); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return p, false, fmt.Errorf("apply the mining tune of %s on GPU %d: %w", p.Model, d.Index, err)
	}
	t.log.Info("mining tune applied", "gpu", d.Index, "uuid", d.UUID, "model", d.Name, "algorithm", algorithm,
		"power_limit_w", p.PowerLimitW, "min_clock_mhz", p.MinClockMHz, "max_clock_mhz", p.MaxClockMHz)
	return p, true, nil
}

// Restore puts the GPU's default power limit and clocks back.
func (t *Tuner) Restore(ctx context.Context, uuid string) error {
	if err := t.gpus.RestoreDefaults(ctx, uuid); err != nil {
		return fmt.Errorf("restore the defaults of GPU %s: %w", uuid, err)
	}
	t.log.Info("mining tune removed", "uuid", uuid)
	return nil
}
