package main

import (
	"os"
	"strings"
	"testing"
)

func Example_main() {
	main()
	// Output:
	// hello queued 0 GPUs
	// hello scheduled 2 GPUs
	// hello started 2 GPUs
	// hello exited 2 GPUs
	// exit code 0, output: --- hello-1 ---
	// hello
}

// readmeMarker precedes the README's copy of this program.
const readmeMarker = "<!-- examples/embed/main.go -->"

// The README shows this program from its package clause on, so the
// snippet readers copy is the one Example_main runs.
func TestREADMEShowsThisProgram(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), readmeMarker+"\n```go\n")
	if !ok {
		t.Fatalf("README.md has no %q followed by a ```go block", readmeMarker)
	}
	snippet, _, ok := strings.Cut(after, "```\n")
	if !ok {
		t.Fatal("the README's ```go block after the marker does not end")
	}
	_, program, _ := strings.Cut(string(src), "\npackage main\n")
	if want := "package main\n" + program; snippet != want {
		t.Errorf("README.md's embedding example differs from examples/embed/main.go (from its package clause on); copy the file there.\nREADME:\n%s\nmain.go:\n%s", snippet, want)
	}
}
