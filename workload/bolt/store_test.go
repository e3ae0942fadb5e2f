package bolt_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bbolt "go.etcd.io/bbolt"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
	"github.com/gpufarm/gpufarm/workload/storetest"
)

// The tests that need a second process run this test binary again with
// helperEnv set; TestMain then plays that process instead of testing.
const helperEnv, pathEnv = "GPUFARM_BOLT_HELPER", "GPUFARM_BOLT_PATH"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "crash":
		crashHelper(os.Getenv(pathEnv))
	case "hold":
		holdHelper(os.Getenv(pathEnv))
	}
	os.Exit(2)
}

// crashHelper writes, reports it, and dies by SIGKILL without Close.
func crashHelper(path string) {
	s, err := bolt.Open(path)
	check(err)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		check(s.Put(ctx, storetest.Workload(id)))
	}
	check(s.Delete(ctx, "b"))
	fmt.Println("committed")
	check(syscall.Kill(os.Getpid(), syscall.SIGKILL))
	select {} // the signal ends the process
}

// holdHelper keeps the store open until its stdin closes, then exits
// without Close.
func holdHelper(path string) {
	s, err := bolt.Open(path)
	check(err)
	check(s.Put(context.Background(), storetest.Workload("held")))
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
}

func helper(t *testing.T, role, path string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, pathEnv+"="+path)
	cmd.Stderr = os.Stderr
	return cmd
}

func open(t *testing.T, path string, opts ...bolt.Option) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ids(t *testing.T, s workload.Store) []string {
	t.Helper()
	ws, err := s.List(context.Background())
	require.NoError(t, err)
	var out []string
	for _, w := range ws {
		out = append(out, w.Spec.ID)
	}
	return out
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) workload.Store {
			return open(t, filepath.Join(t.TempDir(), "workloads.db"))
		},
		Reopen: func(t *testing.T, prev workload.Store) workload.Store {
			path := prev.(*bolt.Store).Path()
			require.NoError(t, prev.Close())
			return open(t, path)
		},
	})
}

// A process killed right after its calls returned loses none of them.
func TestCrashKeepsCommittedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workloads.db")
	cmd := helper(t, "crash", path)
	out, err := cmd.Output()
	t.Logf("ran %v: stdout %q, %v", cmd.Args, out, err)
	require.Equal(t, "committed\n", string(out))
	require.True(t, cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled(), "the helper died by SIGKILL")

	s := open(t, path)
	ws, err := s.List(context.Background())
	require.NoError(t, err)
	require.Len(t, ws, 2)
	assert.Equal(t, []string{"a", "c"}, []string{ws[0].Spec.ID, ws[1].Spec.ID})
	assert.True(t, ws[0].SubmittedAt.Equal(storetest.Workload("a").SubmittedAt))
}

func TestOpenLockedFile(t *testing.T) {
	const wait = 300 * time.Millisecond
	tests := []struct {
		name string
		// hold opens path elsewhere and returns how to let it go.
		hold func(t *testing.T, path string) (release func())
		want []string // ids visible once released
	}{
		{
			name: "another process",
			hold: func(t *testing.T, path string) func() {
				cmd := helper(t, "hold", path)
				stdin, err := cmd.StdinPipe()
				require.NoError(t, err)
				stdout, err := cmd.StdoutPipe()
				require.NoError(t, err)
				require.NoError(t, cmd.Start())
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				line, err := bufio.NewReader(stdout).ReadString('\n')
				require.NoError(t, err)
				require.Equal(t, "locked\n", line)
				t.Logf("ran %v (pid %d) holding %s", cmd.Args, cmd.Process.Pid, path)
				return func() {
					require.NoError(t, stdin.Close())
					require.NoError(t, cmd.Wait())
				}
			},
			want: []string{"held"},
		},
		{
			name: "another Store in this process",
			hold: func(t *testing.T, path string) func() {
				s := open(t, path)
				return func() { require.NoError(t, s.Close()) }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "workloads.db")
			release := tt.hold(t, path)

			start := time.Now()
			s, err := bolt.Open(path, bolt.WithTimeout(wait))
			elapsed := time.Since(start)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, gpu.ErrBusy)
			assert.ErrorContains(t, err, path)
			assert.ErrorContains(t, err, "holds the file's lock")
			assert.GreaterOrEqual(t, elapsed, wait/2, "waits for the lock")
			assert.Less(t, elapsed, wait+5*time.Second, "gives up after WithTimeout")
			t.Logf("second Open failed after %v: %v", elapsed, err)

			release()
			s = open(t, path, bolt.WithTimeout(wait))
			assert.Equal(t, tt.want, ids(t, s), "the holder's writes")
		})
	}
}

// writeRaw builds a file with bbolt itself, as another program or version
// would have.
func writeRaw(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(fn))
	require.NoError(t, db.Close())
}

func withMeta(schema string, workloads bool) func(tx *bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		if schema != "" {
			meta, err := tx.CreateBucket([]byte("meta"))
			if err != nil {
				return err
			}
			if err := meta.Put([]byte("schema"), []byte(schema)); err != nil {
				return err
			}
		}
		if workloads {
			_, err := tx.CreateBucket([]byte("workloads"))
			return err
		}
		return nil
	}
}

func TestOpenRefusesUnknownFiles(t *testing.T) {
	tests := []struct {
		name    string
		write   func(t *testing.T, path string)
		wantIs  error
		wantMsg string
	}{
		{"newer schema", func(t *testing.T, p string) { writeRaw(t, p, withMeta("3", true)) }, gpu.ErrUnsupported, `schema version "3", this build reads 2`},
		{"schema 2 without its event log", func(t *testing.T, p string) { writeRaw(t, p, withMeta("2", true)) }, bolt.ErrCorrupt, `lacks its "events" bucket`},
		{"garbled schema", func(t *testing.T, p string) { writeRaw(t, p, withMeta("one", true)) }, gpu.ErrUnsupported, `schema version "one"`},
		{"no schema", func(t *testing.T, p string) { writeRaw(t, p, withMeta("", true)) }, gpu.ErrUnsupported, "no schema version"},
		{"no workloads bucket", func(t *testing.T, p string) { writeRaw(t, p, withMeta("1", false)) }, bolt.ErrCorrupt, `lacks its "workloads" bucket`},
		{"not a bbolt file", func(t *testing.T, p string) {
			require.NoError(t, os.WriteFile(p, []byte("definitely not a database file, but long enough to look at"), 0o600))
		}, nil, "invalid database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "workloads.db")
			tt.write(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			s, err := bolt.Open(path)
			require.Error(t, err)
			assert.Nil(t, s)
			if tt.wantIs != nil {
				assert.ErrorIs(t, err, tt.wantIs)
			}
			assert.ErrorContains(t, err, tt.wantMsg)
			assert.ErrorContains(t, err, path)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, before, after, "a refused file is left as it was")
		})
	}
}

// TestOpenUpgradesSchema1: a file of the first schema (records only, a
// cancellation as CancelRequested) opens as the current one, with its
// records, its pending cancellations as outcomes, and an event log.
func TestOpenUpgradesSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workloads.db")
	running := storetest.Workload("cancel-pending")
	running.State, running.Outcome, running.Exit = workload.StateRunning, "", nil
	ended := storetest.Workload("ended")
	ended.Outcome = ""
	running.Seq, ended.Seq = 7, 8 // the raw rewrite below goes through float64
	writeRaw(t, path, func(tx *bbolt.Tx) error {
		if err := withMeta("1", true)(tx); err != nil {
			return err
		}
		for _, w := range []workload.Workload{running, ended} {
			b, err := json.Marshal(w)
			if err != nil {
				return err
			}
			// Schema 1 wrote a cancellation as a flag.
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				return err
			}
			delete(raw, "Outcome")
			raw["CancelRequested"] = true
			if b, err = json.Marshal(raw); err != nil {
				return err
			}
			if err := tx.Bucket([]byte("workloads")).Put([]byte(w.Spec.ID), b); err != nil {
				return err
			}
		}
		return nil
	})
	s, err := bolt.Open(path)
	require.NoError(t, err)
	defer s.Close()
	ctx := context.Background()
	got, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, got, 2)
	byID := map[string]workload.Workload{got[0].Spec.ID: got[0], got[1].Spec.ID: got[1]}
	assert.Equal(t, workload.StateCancelled, byID["cancel-pending"].Outcome, "a pending cancellation survives the upgrade")
	assert.Empty(t, byID["ended"].Outcome, "a finished record is left as it was")
	require.NoError(t, s.Append(ctx, storetest.Event(5, "")))
	last, err := s.LastSeq(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), last, "the upgraded file keeps events")
}

func TestOpenBadArguments(t *testing.T) {
	s, err := bolt.Open("", bolt.WithTimeout(0), bolt.WithLogger(nil))
	assert.Nil(t, s)
	assert.ErrorIs(t, err, gpu.ErrInvalid)
	for _, msg := range []string{"path is empty", "WithTimeout(0s)", "WithLogger(nil)"} {
		assert.ErrorContains(t, err, msg, "every problem is reported at once")
	}

	path := filepath.Join(t.TempDir(), "workloads.db")
	_, err = bolt.Open(path, bolt.WithTimeout(-time.Second))
	assert.ErrorIs(t, err, gpu.ErrInvalid)
	assert.NoFileExists(t, path, "a refused Open creates nothing")
}

func TestPutRefusesUnstorableRecords(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "workloads.db"))
	noID := storetest.Workload("")
	nan := storetest.Workload("nan")
	nan.Spec.Load = nanFloat()
	for _, w := range []workload.Workload{noID, nan} {
		err := s.Put(context.Background(), w)
		assert.ErrorIs(t, err, workload.ErrInvalid, "Put %q", w.Spec.ID)
	}
	assert.Empty(t, ids(t, s))
}

func nanFloat() float64 { f, _ := strconv.ParseFloat("NaN", 64); return f }

func TestListReportsCorruptRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workloads.db")
	s := open(t, path)
	require.NoError(t, s.Put(context.Background(), storetest.Workload("good")))
	require.NoError(t, s.Close())

	other, err := json.Marshal(storetest.Workload("other"))
	require.NoError(t, err)
	writeRaw(t, path, func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("workloads"))
		return b.Put([]byte("garbled"), []byte(`{"Spec": {"ID": "garb`))
	})
	writeRaw(t, path, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("workloads")).Put([]byte("misfiled"), other)
	})

	s = open(t, path)
	ws, err := s.List(context.Background())
	assert.Nil(t, ws)
	assert.ErrorIs(t, err, bolt.ErrCorrupt)
	var syntax *json.SyntaxError
	assert.ErrorAs(t, err, &syntax, "the decoder's error stays reachable")
	for _, msg := range []string{`record "garbled"`, `record "misfiled" holds Spec.ID "other"`, path} {
		assert.ErrorContains(t, err, msg, "every bad record is named")
	}
	assert.NotContains(t, err.Error(), `"good"`)

	// Deleting the named records repairs the store.
	for _, id := range []string{"garbled", "misfiled"} {
		require.NoError(t, s.Delete(context.Background(), id))
	}
	assert.Equal(t, []string{"good"}, ids(t, s))
}

// Each Put is a transaction with an fsync, so ns/op is mostly the disk's
// sync latency; the record is storetest.Workload, fully populated.
func BenchmarkPut(b *testing.B) {
	s, err := bolt.Open(filepath.Join(b.TempDir(), "workloads.db"))
	require.NoError(b, err)
	defer s.Close()
	ctx := context.Background()
	w := storetest.Workload("bench")
	data, err := json.Marshal(w)
	require.NoError(b, err)
	for b.Loop() {
		w.Seq++
		if err := s.Put(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "B/record")
}
