package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gpufarm/gpufarm/internal/syncbuf"
)

// Lines written at once by many goroutines arrive whole, and can be read
// while they are written (run with -race).
func TestBufferKeepsConcurrentLinesWhole(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "writer %d line %03d\n", g, i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	assert.Len(t, lines, 800)
	for _, l := range lines {
		assert.Regexp(t, `^writer \d line \d{3}$`, l)
	}
	var out strings.Builder
	w := &syncbuf.Writer{W: &out}
	wg.Go(func() { fmt.Fprintln(w, "a") })
	wg.Go(func() { fmt.Fprintln(w, "b") })
	wg.Wait()
	assert.ElementsMatch(t, []string{"a", "b"}, strings.Fields(out.String()))
}
