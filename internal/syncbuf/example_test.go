package syncbuf_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/gpufarm/gpufarm/internal/syncbuf"
)

// A Buffer takes the log of code that logs from several goroutines, as
// the SDK's managers do, and a test may read it while they write. The
// order of the lines is the goroutines', so they are sorted here.
func ExampleBuffer() {
	var buf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // keep the output the same from run to run
			}
			return a
		},
	}))
	var wg sync.WaitGroup
	for gpu := range 3 {
		wg.Go(func() { log.Info("sampled", "gpu", gpu) })
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// level=INFO msg=sampled gpu=0
	// level=INFO msg=sampled gpu=1
	// level=INFO msg=sampled gpu=2
}
