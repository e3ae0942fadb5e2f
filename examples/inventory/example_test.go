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
	// GPU  NAME       CLASS   CC   MEMORY (reserved)  LINK     LIMITED BY  HOST GB/s  POWER W (limit, range)  PERSIST   ECC          USE     INFER fp16/int4  QLoRA  FULL FT  FLAGS
	// 0    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 1    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 2    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 3    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 4    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 5    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 6    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// 7    CMP 170HX  mining  8.0  8 GiB              gen1 x4  card        1.00       50 (250, 250-250)       disabled  unsupported  mining  3.0B/12.0B       9.6B   376M     cmp-throttled,narrow-link,gen1-link,bus-limited,no-ecc,persistence-off
	// node: 8 GPUs, 64 GiB; training 0, inference 0, mining 8, unusable 0
	//   - no GPU fit for training on this node
}
