package checkpoint_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/training/checkpoint"
)

// A Hugging Face Trainer job was killed while it saved checkpoint-150: the
// weights are there, trainer_state.json is not. The resume must start
// from checkpoint-100.
func ExampleFinder_Find() {
	dir, _ := os.MkdirTemp("", "ckpt")
	defer os.RemoveAll(dir)
	for name, content := range map[string]string{
		"checkpoint-100/model.safetensors":  "weights",
		"checkpoint-100/trainer_state.json": `{"global_step": 100, "max_steps": 1000}`,
		"checkpoint-150/model.safetensors":  "weights",
	} {
		_ = os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		_ = os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	}

	s, err := checkpoint.Finder{Layout: checkpoint.LayoutHF}.Find(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	newest, _ := s.Newest()
	fmt.Printf("resume from %s (step %d)\n", newest.Name, newest.Step)
	for _, p := range s.Partial {
		fmt.Printf("skip %s: %s\n", p.Name, p.Why)
	}
	// Output:
	// resume from checkpoint-100 (step 100)
	// skip checkpoint-150: no trainer_state.json: the save did not finish
}
