package progress_test

import (
	"fmt"

	"github.com/gpufarm/gpufarm/training/progress"
)

// The tail of a Hugging Face Trainer log: a log dict and the progress bar,
// redrawn with carriage returns.
func ExampleParser() {
	p, _ := progress.NewParser(progress.FormatHF)
	p.Feed([]byte("{'loss': 1.7162, 'grad_norm': 0.93, 'learning_rate': 4.5e-05, 'epoch': 0.3}\n" +
		" 10%|█         | 300/3000 [02:30<22:30,  2.00it/s]\r 10%|█         | 310/3000 [02:35<22:25,  2.00it/s]"))
	got, _ := p.Progress()
	fmt.Printf("step %d of %d, loss %.4f, epoch %.1f\n", got.Step, got.Total, got.Loss, got.Epoch)
	fmt.Println(got.Summary())
	// Output:
	// step 310 of 3000, loss 1.7162, epoch 0.3
	// 2 steps/s, ETA 22m25s
}
