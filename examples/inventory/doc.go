// Command inventory prints the GPUs of a node and what each is good for in
// AI: rent for training, rent for inference, or keep mining.
//
// By default it reads a simulated rig, so it runs anywhere:
//
//	go run ./examples/inventory                      # 8x RTX 3080 on gen1 x1 risers
//	go run ./examples/inventory -preset a40          # another simulated fleet
//	go run ./examples/inventory -preset all          # every preset
//	go run ./examples/inventory -backend nvml        # the real GPUs of this host
package main
