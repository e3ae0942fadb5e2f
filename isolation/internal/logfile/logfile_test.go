package logfile_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation/internal/logfile"
)

// lines writes numbered 16-byte lines [from, to) to w.
func lines(t *testing.T, w io.Writer, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		_, err := fmt.Fprintf(w, "line %010d\n", i)
		require.NoError(t, err)
	}
}

func readLogs(t *testing.T, path string) string {
	t.Helper()
	rc, err := logfile.Open(path)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

func diskBytes(t *testing.T, path string) int64 {
	var n int64
	files, _ := filepath.Glob(path + "*")
	for _, p := range files {
		st, err := os.Stat(p)
		require.NoError(t, err)
		n += st.Size()
	}
	return n
}

// The cap of a shim-written log, on a filesystem that can cut a file's
// head (ext4 here) and on one that cannot (tmpfs): the newest output is
// kept, at most the cap, and appends go on at the end.
func TestRotateLogKeepsNewestWithinCap(t *testing.T) {
	const capBytes = 32 << 10
	dirs := map[string]string{"disk": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "isolation-logs-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "c.log")
			// The shim opens the file O_APPEND and keeps it open.
			w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			require.NoError(t, err)
			defer w.Close()
			next := 0
			for round := 0; round < 20; round++ {
				lines(t, w, next, next+1000) // 16 KB a round
				next += 1000
				require.NoError(t, logfile.Rotate(path, capBytes))
				assert.LessOrEqual(t, diskBytes(t, path), int64(capBytes), "round %d", round)
			}
			out := readLogs(t, path)
			assert.LessOrEqual(t, len(out), capBytes)
			assert.GreaterOrEqual(t, len(out), capBytes/2-4096)
			assert.True(t, strings.HasSuffix(out, fmt.Sprintf("line %010d\n", next-1)), "ends with the newest line")
			// Whole lines in order from where it starts.
			ls := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			var first int
			_, err = fmt.Sscanf(ls[1], "line %d", &first)
			require.NoError(t, err)
			for i, l := range ls[1:] {
				require.Equal(t, fmt.Sprintf("line %010d", first+i), l, "nothing lost or reordered")
			}
		})
	}

	t.Run("under the cap nothing changes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "small.log")
		require.NoError(t, os.WriteFile(path, []byte("hello\n"), 0o644))
		require.NoError(t, logfile.Rotate(path, capBytes))
		assert.Equal(t, "hello\n", readLogs(t, path))
	})
	t.Run("a log never written reads empty", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.log")
		require.NoError(t, logfile.Rotate(path, capBytes))
		assert.Equal(t, "", readLogs(t, path))
	})
}

// The process runtime's own capped writer loses nothing but the oldest.
func TestCappedLog(t *testing.T) {
	const capBytes = 4096
	path := filepath.Join(t.TempDir(), "p.log")
	w, err := logfile.NewCapped(path, capBytes)
	require.NoError(t, err)
	lines(t, w, 0, 1000)
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "Close is idempotent")
	out := readLogs(t, path)
	assert.LessOrEqual(t, len(out), capBytes)
	assert.GreaterOrEqual(t, len(out), capBytes/2)
	assert.True(t, strings.HasSuffix(out, "line 0000000999\n"))
	assert.LessOrEqual(t, diskBytes(t, path), int64(capBytes))
	_, err = w.Write([]byte("late"))
	assert.Error(t, err, "no writes after Close")
}
