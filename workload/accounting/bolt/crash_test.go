package bolt_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// The test binary plays the writer process when started with helperEnv
// set; TestMain then writes instead of testing.
const helperEnv, pathEnv = "GPUFARM_LEDGER_WRITER", "GPUFARM_LEDGER_PATH"

const (
	crashGPUs    = 4
	crashPerGPU  = 3000
	crashOverlap = 40
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "writer" {
		if err := writer(os.Getenv(pathEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writer appends every GPU's stream from where the ledger's records end,
// a little before it (delivered again, as a meter after a crash may),
// from one goroutine per GPU in batches of 1 to 8, and prints "ack GPU
// index" for each record once Append has returned nil for it.
func writer(path string) error {
	l, err := bolt.Open(path, bolt.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	ctx := context.Background()
	tails, err := l.Tails(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	errs := make(chan error, crashGPUs)
	for g := range crashGPUs {
		gpu := fmt.Sprintf("GPU-%d", g)
		from := 0
		if t, ok := tails[gpu]; ok {
			from = max(0, int(t.End.Sub(ledgertest.T0)/time.Minute)-crashOverlap)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), uint64(from)))
			s := ledgertest.Stream(gpu, 0, crashPerGPU)
			for i := from; i < len(s); {
				n := min(1+rnd.IntN(8), len(s)-i)
				if err := l.Append(ctx, s[i:i+n]); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for j := i; j < i+n; j++ {
					fmt.Fprintf(out, "ack %s %d\n", gpu, j)
				}
				_ = out.Flush()
				mu.Unlock()
				i += n
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return l.Close()
}

func startWriter(t *testing.T, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=writer", pathEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return cmd, bufio.NewScanner(stdout)
}

// TestCrashLosesNoAcknowledgedRecordAndDoublesNone kills a writer
// process by SIGKILL in the middle of its appends, at a random point,
// then checks the file: every record it was told was stored is there,
// none twice, every GPU's records follow on without a hole. A second
// writer then carries on from the records' end, delivering the last few
// again, and the ledger ends with every record exactly once.
func TestCrashLosesNoAcknowledgedRecordAndDoublesNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	killAt := 1500 + rand.IntN(4000)
	cmd, acks := startWriter(t, path)
	acked := map[string]bool{}
	for acks.Scan() {
		acked[strings.TrimPrefix(acks.Text(), "ack ")] = true
		if len(acked) == killAt {
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			break
		}
	}
	for acks.Scan() { // what it printed before it died
		acked[strings.TrimPrefix(acks.Text(), "ack ")] = true
	}
	_ = cmd.Wait()
	require.True(t, cmd.ProcessState.Sys().(syscall.WaitStatus).Signaled(), "the writer died by SIGKILL, mid-stream")
	t.Logf("killed after %d acknowledged records", len(acked))

	stored := check(t, path)
	for k := range acked {
		require.True(t, stored[k], "acknowledged record %s survived the crash", k)
	}
	assert.Less(t, len(stored), crashGPUs*crashPerGPU, "the writer died before it was done")

	cmd, acks = startWriter(t, path)
	for acks.Scan() {
	}
	require.NoError(t, cmd.Wait(), "the second writer finishes")
	stored = check(t, path)
	assert.Len(t, stored, crashGPUs*crashPerGPU, "every record exactly once")
}

// check opens the ledger and returns the records it holds as "GPU index",
// asserting dense sequence numbers, no duplicates and no holes.
func check(t *testing.T, path string) map[string]bool {
	t.Helper()
	l, err := bolt.Open(path)
	require.NoError(t, err)
	defer l.Close()
	rs, err := accounting.Collect(l.Query(context.Background(), accounting.Query{}))
	require.NoError(t, err)
	stored := map[string]bool{}
	next := map[string]int{}
	for i, r := range rs {
		require.Equal(t, uint64(i+1), r.Seq, "sequence numbers are dense")
		idx := int(r.Start.Sub(ledgertest.T0) / time.Minute)
		key := r.GPU + " " + strconv.Itoa(idx)
		require.False(t, stored[key], "record %s stored once", key)
		require.Equal(t, next[r.GPU], idx, "GPU %s has no hole", r.GPU)
		require.True(t, ledgertest.Stream(r.GPU, idx, 1)[0].Equal(r), "record %s is intact", key)
		stored[key] = true
		next[r.GPU] = idx + 1
	}
	return stored
}
