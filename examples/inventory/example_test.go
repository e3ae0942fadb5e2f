package main

import (
	"context"
	"fmt"
	"os"
)

// The inventory of a simulated CMP 170HX rig: mining-only boards on gen1 x4
// links, so every one keeps mining.
func Example_run() {
	if err := run(context.Background(), os.Stdout, []string{"-preset", "cmp170hx", "-notes=false"}); err != nil {
		fmt.Println(err)
	}
	// Output:
	// == simulated cmp170hx: 8x NVIDIA CMP 170HX 8 GB HBM2e, PCIe gen1 x4, power limit locked at 250 W
	// GPU  NAME       CLASS   CC   MEMORY  LINK     HOST GB/s  POWER W (limit, range)  ECC          USE     INFER fp16/int4  QLoRA  FULL FT  FLAGS
	// 0    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 1    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 2    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 3    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 4    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 5    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 6    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// 7    CMP 170HX  mining  8.0  8 GiB   gen1 x4  1.00       50 (250, 250-250)       unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc
	// node: 8 GPUs, 64 GiB; training 0, inference 0, mining 8, unusable 0
	//   - no GPU fit for training on this node
}
