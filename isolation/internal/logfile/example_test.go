package logfile_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/isolation/internal/logfile"
)

// A process's log capped at 28 bytes, four of these lines: the current
// file fills to half the cap, then becomes the older generation (the one
// before it is dropped), so reading gives the newest output, between half
// the cap and the cap, oldest first. The cut is by bytes: a cap that is not
// a multiple of the lines cuts one.
func ExampleCapped() {
	dir, _ := os.MkdirTemp("", "logs")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "job.log")
	l, err := logfile.NewCapped(path, 28)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(l, "line %d\n", i)
	}
	l.Close()

	r, err := logfile.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	out, _ := io.ReadAll(r)
	fmt.Print(string(out))
	// Output:
	// line 3
	// line 4
	// line 5
	// line 6
}
