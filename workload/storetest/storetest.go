package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// Harness tells Run how to get stores.
type Harness struct {
	// Open returns a new, empty store; it is called once or more per
	// subtest. Run closes every store it gets, so Open need not.
	Open func(t *testing.T) workload.Store
	// Reopen, when set, closes prev and opens the same underlying data
	// again, as a restarted process would. Leave it nil for stores that
	// are not durable; the durability subtests are then not run.
	Reopen func(t *testing.T, prev workload.Store) workload.Store
}

// Many is the number of records of the volume subtest.
const Many = 1000

// Run runs the conformance suite against the stores h gives, each subtest
// on a store of its own.
func Run(t *testing.T, h Harness) {
	t.Helper()
	require.NotNil(t, h.Open, "storetest: Harness.Open is required")
	s := suite{h: h}
	t.Run("RoundTripEveryField", s.roundTrip)
	t.Run("RoundTripAbsentFields", s.roundTripAbsent)
	t.Run("PutReplaces", s.putReplaces)
	t.Run("Delete", s.delete)
	t.Run("DeleteMissing", s.deleteMissing)
	t.Run("ListEmpty", s.listEmpty)
	t.Run("CopiesIn", s.copiesIn)
	t.Run("CopiesOut", s.copiesOut)
	t.Run("CancelledContext", s.cancelled)
	t.Run("Close", s.close)
	t.Run("Concurrent", s.concurrent)
	t.Run("Many", s.many)
	if h.Reopen != nil {
		t.Run("Durable", s.durable)
	} else {
		t.Log("storetest: Harness.Reopen is nil; durability subtests not run")
	}
	// The optional interfaces, for the stores that have them.
	probe := h.Open(t)
	_, events := probe.(workload.EventStore)
	_, settings := probe.(workload.SettingStore)
	_, logs := probe.(workload.LogStore)
	_ = probe.Close()
	if events {
		t.Run("Events", s.events)
		t.Run("EventsPaged", s.eventsPaged)
	}
	if settings {
		t.Run("Settings", s.settings)
	}
	if logs {
		t.Run("Logs", s.logs)
	}
}

// Workload returns a record with every field of workload.Workload and
// workload.Spec set to a value other than its zero value, so a store that
// drops or truncates a field fails the round trip. Records of different ids
// differ in every id-derived field.
func Workload(id string) workload.Workload {
	// A non-UTC zone and nanoseconds: stores must keep the instant exactly.
	zone := time.FixedZone("UTC+2", 2*60*60)
	at := time.Date(2025, time.March, 14, 9, 26, 53, 589793238, zone)
	return workload.Workload{
		Spec: workload.Spec{
			ID:       id,
			Kind:     workload.KindTraining,
			Tenant:   "acme",
			Priority: 7,
			GPUs: workload.GPURequest{
				Count:                2,
				MinMemoryBytes:       24 << 30,
				MinComputeCapability: gpu.ComputeCapability{Major: 8, Minor: 6},
				MinLink:              gpu.Link{Gen: 3, Width: 8},
				Models:               []string{"GeForce RTX 3090", "A40"},
				UUIDs:                []string{"GPU-" + id + "-0", "GPU-" + id + "-1"},
				IgnoreReadiness:      true,
			},
			Image:   "registry.example/acme/train:1.2",
			Command: []string{"torchrun", "--nproc-per-node=2", "train.py", "--run=" + id},
			Env:     []string{"EPOCHS=3", "RUN=" + id, "EMPTY="},
			WorkDir: "/workspace",
			Mounts: []isolation.Mount{
				{Source: "/srv/datasets/imagenet", Target: "/data", ReadOnly: true},
				{Source: "/srv/checkpoints/" + id, Target: "/ckpt"},
			},
			Resources:       isolation.Limits{CPUMillis: 7500, MemoryBytes: 64 << 30, Pids: 4096, CPUShares: 2048},
			Network:         isolation.NetworkHost,
			Preemptible:     true,
			StopSignal:      syscall.SIGUSR1,
			StopGrace:       90 * time.Second,
			MinRuntime:      10 * time.Minute,
			PricePerGPUHour: 0.35,
			External:        true,
			Load:            0.9,
			OnGPULoss:       workload.GPULossFail,
			Labels:          map[string]string{"run": id, "team": "vision", "note": "ünïcode \"quoted\""},
		},
		State:       workload.StateExited,
		GPUs:        []string{"GPU-" + id + "-0", "GPU-" + id + "-1"},
		Container:   isolation.Ref{Tenant: "acme", ID: id + "-3"},
		Address:     netip.MustParseAddr("10.200.0.7"),
		Attempt:     3,
		Preemptions: 2,
		Retries:     1,
		Outcome:     workload.StateCancelled,
		SubmittedAt: at,
		StartedAt:   at.Add(time.Hour + time.Nanosecond),
		EndedAt:     at.Add(5 * time.Hour),
		Exit: &isolation.ExitStatus{
			Code:      137,
			Reason:    isolation.ReasonOOMKilled,
			OOMKilled: true,
			ExitedAt:  at.Add(5*time.Hour - time.Millisecond),
		},
		Reason: "out of memory on attempt 3",
		Progress: &workload.Progress{Step: 1200, Total: 5000, Loss: 1.25, HasLoss: true, Epoch: 0.24, Throughput: 812.5,
			ThroughputUnit: "samples", ETA: 17 * time.Minute, Message: "step " + id},
		StopAskedAt: at.Add(4 * time.Hour),
		Ready:       true,
		ExitNote:    "checkpoint saved at step 1200 during grace",
		// Beyond float64's exact integers: a store must not pass it through one.
		Seq: math.MaxUint64 - 1,
	}
}

type suite struct{ h Harness }

// open returns a store that is closed when the test ends.
func (s suite) open(t *testing.T) workload.Store {
	t.Helper()
	st := s.h.Open(t)
	require.NotNil(t, st, "Harness.Open returned nil")
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func (s suite) reopen(t *testing.T, prev workload.Store) workload.Store {
	t.Helper()
	st := s.h.Reopen(t, prev)
	require.NotNil(t, st, "Harness.Reopen returned nil")
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// normal makes records comparable with assert.Equal: times compare as
// instants (time.Time.Equal), whatever zone or monotonic reading the store
// hands back.
func normal(w workload.Workload) workload.Workload {
	fix := func(t time.Time) time.Time { return t.Round(0).UTC() }
	w.SubmittedAt, w.StartedAt, w.EndedAt, w.StopAskedAt = fix(w.SubmittedAt), fix(w.StartedAt), fix(w.EndedAt), fix(w.StopAskedAt)
	if w.Exit != nil {
		e := *w.Exit
		e.ExitedAt = fix(e.ExitedAt)
		w.Exit = &e
	}
	return w
}

func normalAll(ws []workload.Workload) []workload.Workload {
	out := make([]workload.Workload, len(ws))
	for i, w := range ws {
		out[i] = normal(w)
	}
	slices.SortFunc(out, func(a, b workload.Workload) int { return strings.Compare(a.Spec.ID, b.Spec.ID) })
	return out
}

func list(t *testing.T, st workload.Store) []workload.Workload {
	t.Helper()
	got, err := st.List(context.Background())
	require.NoError(t, err)
	return normalAll(got)
}

func put(t *testing.T, st workload.Store, ws ...workload.Workload) {
	t.Helper()
	for _, w := range ws {
		require.NoError(t, st.Put(context.Background(), w), "Put %q", w.Spec.ID)
	}
}

func ids(ws []workload.Workload) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Spec.ID
	}
	slices.Sort(out)
	return out
}

func (s suite) roundTrip(t *testing.T) {
	st := s.open(t)
	a, b := Workload("train-a"), Workload("train-b")
	put(t, st, a, b)
	assert.Equal(t, normalAll([]workload.Workload{a, b}), list(t, st))
}

// A queued record has no Exit and no times: absent must come back absent,
// not as a zero ExitStatus.
func (s suite) roundTripAbsent(t *testing.T) {
	st := s.open(t)
	w := workload.Workload{
		Spec:  workload.Spec{ID: "queued-1", Kind: workload.KindBatch, GPUs: workload.GPURequest{Count: 1}, Image: "busybox"},
		State: workload.StateQueued,
	}
	put(t, st, w)
	got := list(t, st)
	require.Len(t, got, 1)
	assert.Nil(t, got[0].Exit, "Exit of a record that never ran")
	assert.True(t, got[0].StartedAt.IsZero() && got[0].EndedAt.IsZero(), "times of a record that never ran")
	assert.Equal(t, normal(w), got[0])
}

func (s suite) putReplaces(t *testing.T) {
	st := s.open(t)
	first := Workload("job")
	put(t, st, first, Workload("other"))
	second := Workload("job")
	second.State = workload.StateRunning
	second.Attempt = 4
	second.Exit = nil
	second.Spec.Labels = map[string]string{"only": "this"}
	put(t, st, second)
	assert.Equal(t, normalAll([]workload.Workload{second, Workload("other")}), list(t, st))
}

func (s suite) delete(t *testing.T) {
	st := s.open(t)
	put(t, st, Workload("a"), Workload("b"), Workload("c"))
	require.NoError(t, st.Delete(context.Background(), "b"))
	assert.Equal(t, []string{"a", "c"}, ids(list(t, st)))
	// Deleted ids can be used again.
	put(t, st, Workload("b"))
	assert.Equal(t, []string{"a", "b", "c"}, ids(list(t, st)))
}

func (s suite) deleteMissing(t *testing.T) {
	st := s.open(t)
	assert.NoError(t, st.Delete(context.Background(), "never-put"), "on an empty store")
	put(t, st, Workload("a"))
	require.NoError(t, st.Delete(context.Background(), "a"))
	assert.NoError(t, st.Delete(context.Background(), "a"), "twice")
	assert.Empty(t, list(t, st))
}

func (s suite) listEmpty(t *testing.T) {
	st := s.open(t)
	got, err := st.List(context.Background())
	require.NoError(t, err)
	assert.Empty(t, got)
}

// The caller's record may change after Put; the store must not see it.
func (s suite) copiesIn(t *testing.T) {
	st := s.open(t)
	w := Workload("a")
	put(t, st, w)
	mutate(&w)
	assert.Equal(t, normalAll([]workload.Workload{Workload("a")}), list(t, st))
}

// A caller may change what List returned; the store must not see it.
func (s suite) copiesOut(t *testing.T) {
	st := s.open(t)
	put(t, st, Workload("a"))
	got, err := st.List(context.Background())
	require.NoError(t, err)
	require.Len(t, got, 1)
	mutate(&got[0])
	assert.Equal(t, normalAll([]workload.Workload{Workload("a")}), list(t, st))
}

// mutate changes every shared part of w: slices, map and pointer.
func mutate(w *workload.Workload) {
	w.Spec.GPUs.Models[0] = "changed"
	w.Spec.GPUs.UUIDs[0] = "changed"
	w.Spec.Command[0] = "changed"
	w.Spec.Env[0] = "CHANGED=1"
	w.Spec.Mounts[0].Source = "/changed"
	w.Spec.Labels["run"] = "changed"
	w.Spec.Labels["added"] = "changed"
	w.GPUs[0] = "changed"
	w.Exit.Code = 1
	w.Progress.Step = -1
}

func (s suite) cancelled(t *testing.T) {
	st := s.open(t)
	put(t, st, Workload("kept"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	err := st.Put(ctx, Workload("new"))
	assert.ErrorIs(t, err, context.Canceled, "Put")
	err = st.Delete(ctx, "kept")
	assert.ErrorIs(t, err, context.Canceled, "Delete")
	got, err := st.List(ctx)
	assert.ErrorIs(t, err, context.Canceled, "List")
	assert.Empty(t, got, "List")
	// A cancelled call changes nothing.
	assert.Equal(t, []string{"kept"}, ids(list(t, st)))
}

func (s suite) close(t *testing.T) {
	st := s.open(t)
	put(t, st, Workload("a"))
	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "second Close")

	ctx := context.Background()
	assert.ErrorIs(t, st.Put(ctx, Workload("b")), workload.ErrClosed, "Put")
	assert.ErrorIs(t, st.Delete(ctx, "a"), workload.ErrClosed, "Delete")
	_, err := st.List(ctx)
	assert.ErrorIs(t, err, workload.ErrClosed, "List")
}

// Writers put and delete while readers list; every listed record must be
// whole, and the end state exact. Run it with -race.
func (s suite) concurrent(t *testing.T) {
	const writers, perWriter, deleted = 4, 20, 5
	st := s.open(t)
	ctx := context.Background()
	errs := make(chan error, writers*perWriter+64)
	done := make(chan struct{})
	var readers, ws sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := st.List(ctx)
				if err != nil {
					errs <- fmt.Errorf("List: %w", err)
					return
				}
				for _, w := range got {
					if !assert.Equal(t, normal(Workload(w.Spec.ID)), normal(w), "torn record") {
						return
					}
				}
			}
		})
	}
	var want []string
	for g := range writers {
		var mine []string
		for i := range perWriter {
			mine = append(mine, fmt.Sprintf("w%d-%02d", g, i))
		}
		want = append(want, mine[deleted:]...)
		ws.Go(func() {
			for _, id := range mine {
				if err := st.Put(ctx, Workload(id)); err != nil {
					errs <- fmt.Errorf("Put %q: %w", id, err)
				}
			}
			for _, id := range mine[:deleted] {
				if err := st.Delete(ctx, id); err != nil {
					errs <- fmt.Errorf("Delete %q: %w", id, err)
				}
			}
		})
	}
	ws.Wait()
	close(done)
	readers.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	require.NoError(t, errors.Join(all...))
	slices.Sort(want)
	assert.Equal(t, want, ids(list(t, st)))
}

func (s suite) many(t *testing.T) {
	st := s.open(t)
	var want []workload.Workload
	for i := range Many {
		w := Workload(fmt.Sprintf("job-%04d", i))
		w.Seq = uint64(i)
		want = append(want, w)
	}
	put(t, st, want...)
	assert.Equal(t, normalAll(want), list(t, st))
	if s.h.Reopen != nil {
		st = s.reopen(t, st)
		assert.Equal(t, normalAll(want), list(t, st), "after Reopen")
	}
}

func (s suite) durable(t *testing.T) {
	st := s.open(t)
	replaced := Workload("b")
	replaced.State = workload.StateQueued
	replaced.Exit = nil
	put(t, st, Workload("a"), Workload("b"), Workload("c"), replaced)
	require.NoError(t, st.Delete(context.Background(), "c"))
	want := normalAll([]workload.Workload{Workload("a"), replaced})

	st = s.reopen(t, st)
	assert.Equal(t, want, list(t, st), "after Reopen")

	// The reopened store is writable and its writes last too.
	put(t, st, Workload("d"))
	st = s.reopen(t, st)
	assert.Equal(t, []string{"a", "b", "d"}, ids(list(t, st)), "after a second Reopen")
}

// Event returns an event with every field set, of sequence number seq.
func Event(seq uint64, id string) workload.Event {
	at := time.Date(2025, time.March, 14, 9, 26, 53, 589793238, time.FixedZone("UTC+2", 2*60*60))
	return workload.Event{
		Seq: seq, Type: workload.EventStarted, ID: id, Kind: workload.KindTraining, Tenant: "acme", Attempt: 2,
		Time: at, GPUs: []string{"GPU-" + id + "-0"}, Reason: "taking GPUs from mine-1", Note: "no checkpoint written",
		Exit:     &isolation.ExitStatus{Code: 143, Reason: isolation.ReasonStopped, ExitedAt: at},
		Progress: &workload.Progress{Step: 7, Total: 9, Loss: 0.5, HasLoss: true, Epoch: 1.5, Message: "m"},
		Handover: &workload.Handover{From: []string{"mine-1", "mine-2"}, Drain: time.Second, Prepare: 2 * time.Millisecond,
			Hygiene: 3 * time.Millisecond, Total: 4 * time.Second},
	}
}

func normalEvents(evs []workload.Event) []workload.Event {
	out := make([]workload.Event, len(evs))
	for i, ev := range evs {
		ev.Time = ev.Time.Round(0).UTC()
		if ev.Exit != nil {
			x := *ev.Exit
			x.ExitedAt = x.ExitedAt.Round(0).UTC()
			ev.Exit = &x
		}
		out[i] = ev
	}
	return out
}

func (s suite) events(t *testing.T) {
	st := s.open(t).(workload.EventStore)
	ctx := context.Background()
	last, err := st.LastSeq(ctx)
	require.NoError(t, err)
	assert.Zero(t, last, "an empty log")

	// Commit writes the record and the event together.
	w := Workload("a")
	require.NoError(t, st.Commit(ctx, w, Event(10, "a")))
	require.NoError(t, st.Append(ctx, Event(11, "")))
	require.NoError(t, st.Commit(ctx, w, Event(math.MaxUint64-1, "a")))
	assert.Equal(t, []string{"a"}, ids(list(t, st)))
	got, err := st.Events(ctx, 0, 100)
	require.NoError(t, err)
	assert.Equal(t, normalEvents([]workload.Event{Event(10, "a"), Event(11, ""), Event(math.MaxUint64-1, "a")}), normalEvents(got),
		"in Seq order, every field kept, Seq beyond float64's exact integers")
	last, err = st.LastSeq(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(math.MaxUint64-1), last)

	got, err = st.Events(ctx, 10, 1)
	require.NoError(t, err)
	require.Len(t, got, 1, "limit")
	assert.Equal(t, uint64(11), got[0].Seq, "after is exclusive")

	require.NoError(t, st.TrimEvents(ctx, 11))
	got, err = st.Events(ctx, 0, 100)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, uint64(math.MaxUint64-1), got[0].Seq, "trim drops up to and including upTo")

	// A caller may change what Events returned; the store must not see it.
	got[0].GPUs[0] = "changed"
	got[0].Handover.From[0] = "changed"
	again, err := st.Events(ctx, 0, 100)
	require.NoError(t, err)
	assert.Equal(t, normalEvents([]workload.Event{Event(math.MaxUint64-1, "a")}), normalEvents(again))

	if s.h.Reopen != nil {
		st = s.reopen(t, st).(workload.EventStore)
		got, err = st.Events(ctx, 0, 100)
		require.NoError(t, err)
		assert.Equal(t, normalEvents([]workload.Event{Event(math.MaxUint64-1, "a")}), normalEvents(got), "after Reopen")
	}
}

func (s suite) eventsPaged(t *testing.T) {
	st := s.open(t).(workload.EventStore)
	ctx := context.Background()
	for seq := uint64(1); seq <= Many; seq++ {
		require.NoError(t, st.Append(ctx, Event(seq, "")))
	}
	var seen []uint64
	for after := uint64(0); ; {
		page, err := st.Events(ctx, after, 64)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, ev := range page {
			seen = append(seen, ev.Seq)
			after = ev.Seq
		}
	}
	require.Len(t, seen, Many)
	assert.True(t, slices.IsSorted(seen))
}

func (s suite) settings(t *testing.T) {
	st := s.open(t).(workload.SettingStore)
	ctx := context.Background()
	v, err := st.Setting(ctx, "cordons")
	require.NoError(t, err)
	assert.Nil(t, v, "never set")
	require.NoError(t, st.PutSetting(ctx, "cordons", []byte(`{"GPU-1":"fan"}`)))
	require.NoError(t, st.PutSetting(ctx, "other", []byte("x")))
	require.NoError(t, st.PutSetting(ctx, "cordons", []byte(`{}`)))
	v, err = st.Setting(ctx, "cordons")
	require.NoError(t, err)
	assert.Equal(t, []byte(`{}`), v, "the last value")
	if s.h.Reopen != nil {
		st = s.reopen(t, st).(workload.SettingStore)
		v, err = st.Setting(ctx, "other")
		require.NoError(t, err)
		assert.Equal(t, []byte("x"), v, "after Reopen")
	}
}

func (s suite) logs(t *testing.T) {
	st := s.open(t).(workload.LogStore)
	ctx := context.Background()
	put(t, st, Workload("a"))
	v, err := st.Log(ctx, "a")
	require.NoError(t, err)
	assert.Nil(t, v, "none kept yet")
	tail := []byte("step 1\nstep 2\n")
	require.NoError(t, st.PutLog(ctx, "a", tail))
	tail[0] = 'X' // the store keeps its own copy
	v, err = st.Log(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, "step 1\nstep 2\n", string(v))
	require.NoError(t, st.Delete(ctx, "a"))
	v, err = st.Log(ctx, "a")
	require.NoError(t, err)
	assert.Nil(t, v, "Delete removes the kept log with the record")
}
